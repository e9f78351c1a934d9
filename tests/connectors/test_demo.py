"""The built-in demo connector: a seeded helpdesk simulation driven by a fake clock."""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import rules
from connectors import Batch, FatalError, connector_types
from connectors.demo import DemoConnector
from rules.events import Created, Event, FieldChange, FieldValue, Message, Rating, Removed

HOUR, DAY = 3600, 86400
BERLIN = ZoneInfo("Europe/Berlin")
WEDNESDAY = dt.datetime(2026, 3, 11, 14, 0, tzinfo=dt.UTC)  # 15:00 in Berlin
SUNDAY_NIGHT = dt.datetime(2026, 3, 15, 2, 0, tzinfo=dt.UTC)  # 03:00 in Berlin
SATURDAY_EVENING = dt.datetime(2026, 8, 1, 19, 30, tzinfo=dt.UTC)  # summer time

# The demo's policies: urgent 10m first response around the clock, high 1h, standard 4h
# in Berlin office hours (Mon-Fri 09:00-18:00, German public holidays off).
POLICIES = {
    "calendars": [
        {
            "name": "berlin-office",
            "timezone": "Europe/Berlin",
            "hours": {"mon-fri": ["09:00-18:00"]},
            "holidays": {"country": "DE"},
        }
    ],
    "policies": [
        {
            "name": "urgent",
            "match": {"priority": ["urgent"], "tags_none": ["no-sla"]},
            "calendar": "24x7",
            "targets": {"first_response": "10m", "next_response": "30m", "resolution": "4h"},
        },
        {
            "name": "high",
            "match": {"priority": ["high"], "tags_none": ["no-sla"]},
            "calendar": "berlin-office",
            "targets": {"first_response": "1h", "next_response": "2h", "resolution": "6h"},
        },
        {
            "name": "standard",
            "match": {"tags_none": ["no-sla"]},
            "calendar": "berlin-office",
            "targets": {"first_response": "4h", "next_response": "8h", "resolution": "9h"},
        },
    ],
}
RULES = rules.load_rules(POLICIES)


class Clock:
    """The time the connector sees, moved by the test."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Store:
    """What the monitor keeps: each ticket's events by id, its latest fields, the cursor."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Event]] = {}
        self.fields: dict[str, dict[str, FieldValue]] = {}
        self.cursor: dict[str, str] | None = None
        self.batches: list[Batch] = []

    def sync(self, connector: DemoConnector, stop: threading.Event | None = None) -> None:
        for batch in connector.sync(self.cursor, stop or threading.Event()):
            self.take(batch)

    def take(self, batch: Batch) -> None:
        self.batches.append(batch)
        for change in batch.changes:
            self.events.setdefault(change.ticket, {}).update({e.id: e for e in change.events})
            self.fields[change.ticket] = dict(change.fields)
        self.cursor = batch.cursor

    def all_events(self) -> list[Event]:
        return [e for events in self.events.values() for e in events.values()]

    def clocks(
        self, at: dt.datetime, ruleset: rules.RuleSet = RULES
    ) -> dict[tuple[str, str, int], rules.Clock]:
        out = {}
        for ticket, events in self.events.items():
            for clock in rules.evaluate("demo", events.values(), ruleset, at).clocks:
                out[(ticket, clock.metric, clock.cycle)] = clock
        return out


def demo(clock: Clock, **options: object) -> DemoConnector:
    return DemoConnector("demo", options, clock=clock)


def backfill(at: dt.datetime, **options: object) -> Store:
    store = Store()
    store.sync(demo(Clock(at), **options))
    return store


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def times(events: Iterable[Event]) -> list[dt.datetime]:
    return [e.at for e in events]


@pytest.fixture(scope="module")
def three_days() -> Store:
    return backfill(WEDNESDAY)


@pytest.fixture(scope="module")
def rule_sets() -> dict[str, rules.RuleSet]:
    """The documented demo policies, and those ``slamon run --demo`` loads."""
    from monitor.config import demo_config

    return {"documented": RULES, "run --demo": demo_config(Path("slamon-data")).rules}


def test_registered_as_demo_with_links_to_its_tickets(three_days: Store) -> None:
    assert connector_types()["demo"] is DemoConnector
    connector = DemoConnector("demo", {})
    assert connector.ticket_url("42") == "https://demo.slamon.invalid/tickets/42"
    for ticket, fields in three_days.fields.items():
        assert fields["url"] == connector.ticket_url(ticket)


def test_first_sync_backfills_the_configured_window(three_days: Store) -> None:
    origin = WEDNESDAY - dt.timedelta(days=3)
    batches = three_days.batches
    assert len(batches) > 1 and batches[-1].done and not any(b.done for b in batches[:-1])
    assert batches[-1].cursor["origin"] == "2026-03-08T14:00:00Z"
    assert batches[-1].cursor["until"] == "2026-03-11T14:00:00Z"
    for batch in batches:
        assert batch.newest == utc(batch.cursor["until"])
    assert all(origin < at <= WEDNESDAY for at in times(three_days.all_events()))
    created = sorted(e.at for e in three_days.all_events() if isinstance(e, Created))
    assert created[0] - origin < dt.timedelta(hours=1)
    assert WEDNESDAY - created[-1] < dt.timedelta(minutes=15)
    assert 1500 < len(created) < 3500  # about 30 an hour, more on weekdays than at weekends


def test_start_sets_the_origin_only_when_no_backfill_is_given() -> None:
    start = WEDNESDAY - dt.timedelta(hours=5)
    from_start = backfill(WEDNESDAY, start=start)
    assert from_start.cursor is not None and utc(from_start.cursor["origin"]) == start
    assert start < min(times(from_start.all_events())) < start + dt.timedelta(hours=1)

    one_hour = backfill(WEDNESDAY, start=start, backfill=HOUR)
    origin = WEDNESDAY - dt.timedelta(hours=1)
    assert one_hour.cursor is not None and utc(one_hour.cursor["origin"]) == origin
    assert origin < min(times(one_hour.all_events())) < origin + dt.timedelta(minutes=30)


def test_volume_follows_tickets_per_hour_and_the_working_week() -> None:
    week = {rate: backfill(WEDNESDAY, tickets_per_hour=rate, backfill=7 * DAY) for rate in (5, 20)}
    for rate, store in week.items():
        count = sum(isinstance(e, Created) for e in store.all_events())
        assert abs(count - rate * 7 * 24) < 0.25 * rate * 7 * 24
    # arrivals per hour: 5 x 8 weekday office hours, 2 x 8 at weekends, 7 x 6 night hours
    local = [e.at.astimezone(BERLIN) for e in week[20].all_events() if isinstance(e, Created)]
    office = sum(t.weekday() < 5 and 9 <= t.hour < 17 for t in local) / (5 * 8)
    night = sum(t.hour < 6 for t in local) / (7 * 6)
    weekend_day = sum(t.weekday() >= 5 and 9 <= t.hour < 17 for t in local) / (2 * 8)
    assert office > 5 * night and office > 2 * weekend_day


def test_same_seed_same_world_whatever_the_polling_pattern() -> None:
    options = {"seed": 5, "backfill": 6 * HOUR}
    end = WEDNESDAY + dt.timedelta(hours=8)

    once = Store()
    clock = Clock(WEDNESDAY)
    connector = demo(clock, **options)
    once.sync(connector)
    clock.now = end
    once.sync(connector)

    steps = Store()
    clock = Clock(WEDNESDAY)
    connector = demo(clock, **options)
    steps.sync(connector)
    jitter = random.Random(0)
    for n in range(1, 10_000):
        if clock.now >= end:
            break
        clock.now = min(end, clock.now + dt.timedelta(seconds=jitter.randint(1, 45 * 60)))
        if n % 5 == 0:  # restarted: a new connector resumes from the stored cursor
            connector = demo(clock, **options)
        steps.sync(connector)

    assert len(steps.batches) > 2 * len(once.batches)
    assert sum(e.at > WEDNESDAY for e in once.all_events()) > 100  # live traffic, too
    assert steps.events == once.events
    assert steps.fields == once.fields

    other = Store()
    clock = Clock(WEDNESDAY)
    connector = demo(clock, **{**options, "seed": 6})
    other.sync(connector)
    clock.now = end
    other.sync(connector)
    assert other.events != once.events


def test_event_ids_are_unique_and_each_ticket_is_in_helpdesk_order(three_days: Store) -> None:
    ids = [e.id for b in three_days.batches for change in b.changes for e in change.events]
    assert len(ids) == len(set(ids))
    for ticket, by_id in three_days.events.items():
        events = sorted(by_id.values(), key=lambda e: e.seq)
        assert [e.id for e in events] == [f"{ticket}-{n}" for n in range(len(events))]
        assert times(events) == sorted(times(events))
        created, opening = events[0], events[1]
        assert isinstance(created, Created) and isinstance(opening, Message)
        assert (opening.at, opening.author, opening.public) == (created.at, created.by, True)


def test_batches_are_small_consecutive_windows(three_days: Store) -> None:
    until = utc("2026-03-08T14:00:00Z")
    for batch in three_days.batches:
        assert 0 < len(batch.changes) <= 200
        since, until = until, utc(batch.cursor["until"])
        assert since < until
        for change in batch.changes:
            assert change.events and all(since < e.at <= until for e in change.events)
            assert change.updated_at == change.events[-1].at
        assert len({change.ticket for change in batch.changes}) == len(batch.changes)


def test_restart_resumes_from_the_stored_cursor_with_only_new_events() -> None:
    clock = Clock(WEDNESDAY)
    running = demo(clock, backfill=DAY)
    first = Store()
    first.sync(running)
    seen = {e.id for e in first.all_events()}
    stored = first.cursor

    clock.advance(3 * HOUR)
    restarted, again, continued = Store(), Store(), Store()
    for store in (restarted, again):
        store.cursor = stored
        store.sync(demo(clock, backfill=DAY))  # a new process with the same config
    continued.cursor = stored
    continued.sync(running)  # the process that never stopped

    new = restarted.all_events()
    assert new and not seen & {e.id for e in new}
    assert all(WEDNESDAY < at <= clock.now for at in times(new))
    assert restarted.events == again.events == continued.events
    assert restarted.cursor is not None and stored is not None
    assert restarted.cursor["origin"] == stored["origin"]
    assert utc(restarted.cursor["until"]) == clock.now

    clock.advance(-60)  # the clock stepped back: nothing new, the cursor stays
    late = Store()
    late.cursor = restarted.cursor
    late.sync(demo(clock, backfill=DAY))
    assert late.all_events() == [] and late.cursor == restarted.cursor
    assert late.batches[-1].done


def test_stop_ends_the_sync_between_batches(three_days: Store) -> None:
    stop = threading.Event()
    stop.set()
    assert list(demo(Clock(WEDNESDAY)).sync(None, stop)) == []

    stop = threading.Event()
    halted = Store()
    for batch in demo(Clock(WEDNESDAY)).sync(None, stop):
        halted.take(batch)
        stop.set()
    assert len(halted.batches) == 1 and not halted.batches[0].done

    halted.sync(demo(Clock(WEDNESDAY)))  # resumed later from the stored cursor
    assert halted.events == three_days.events


def test_three_days_hold_every_kind_of_ticket_and_event(three_days: Store) -> None:
    events = three_days.all_events()
    changes = [e for e in events if isinstance(e, FieldChange)]
    created = [e for e in events if isinstance(e, Created)]
    messages = Counter((e.author, e.public) for e in events if isinstance(e, Message))
    statuses = {e.new for e in changes if e.field == "status"} | {
        c.fields["status"] for c in created
    }
    assert statuses == {"new", "open", "pending", "on_hold", "solved", "closed"}
    fields = three_days.fields.values()
    assert {f["priority"] for f in fields} == {"low", "normal", "high", "urgent"}
    assert {f["channel"] for f in fields} == {"email", "web", "chat", "phone", "social"}
    assert {"billing", "technical", "accounts", "sales"} <= {f["queue"] for f in fields}
    tags = Counter(tag for f in fields for tag in f["tags"])
    assert all(tags[t] for t in ("vip", "bug", "refund", "no-sla"))
    assert tags["no-sla"] < 0.05 * len(three_days.fields)  # rare
    assert all(re.fullmatch(r"customer\d+@example\.com", str(f["requester"])) for f in fields)
    assert all(f["subject"] and "organization" in f for f in fields)

    assert messages[("agent", False)] and messages[("system", True)]
    assert messages[("customer", True)] > messages[("agent", False)]
    assert any(c.by == "agent" for c in created)  # outbound tickets
    assert any(e.old == "solved" and e.new == "open" for e in changes if e.field == "status")
    ranks = ("low", "normal", "high", "urgent")
    moves = [
        (ranks.index(str(e.old)), ranks.index(str(e.new))) for e in changes if e.field == "priority"
    ]
    assert any(a < b for a, b in moves) and any(a > b for a, b in moves)
    assert any(e.field == "queue" for e in changes)
    removed = {e.reason for e in events if isinstance(e, Removed)}
    assert "spam" in removed and removed & {"deleted", "merged"}
    assert len([e for e in events if isinstance(e, Removed)]) < 0.1 * len(created)

    ratings = [e for e in events if isinstance(e, Rating)]
    assert {r.survey for r in ratings} == {"csat", "nps", "ces"}
    assert {r.score for r in ratings if r.survey == "csat"} == {1, 2, 3, 4, 5}
    assert all(0 <= r.score <= 10 for r in ratings if r.survey == "nps")
    csat_per_ticket = Counter(r.id.split("-")[0] for r in ratings if r.survey == "csat")
    assert max(csat_per_ticket.values()) > 1  # someone changed their answer

    streaks = 0  # customers writing several times in a row
    for by_id in three_days.events.values():
        public = [e for e in by_id.values() if isinstance(e, Message) and e.public]
        public.sort(key=lambda e: e.seq)
        streaks += any(
            a.author == b.author == "customer" for a, b in zip(public, public[1:], strict=False)
        )
    assert streaks > 10


def test_after_backfill_clocks_are_in_every_state_and_most_targets_are_met(
    three_days: Store,
) -> None:
    clocks = three_days.clocks(WEDNESDAY).values()
    states = Counter(c.state for c in clocks)
    assert states["on_track"] and states["achieved"] and states["missed"]
    assert states["at_risk"] + states["breached"] > 0
    for metric in ("first_response", "next_response"):  # most answers are in time
        done = Counter(c.state for c in clocks if c.metric == metric)
        compliance = done["achieved"] / (done["achieved"] + done["missed"])
        assert 0.8 < compliance < 0.97, (metric, done)
    assert any(c.metric == "resolution" and c.state == "missed" for c in clocks)


@pytest.mark.parametrize(
    ("start", "seed"), [(WEDNESDAY, 1), (SUNDAY_NIGHT, 2), (SATURDAY_EVENING, 3)]
)
def test_live_traffic_turns_a_clock_at_risk_then_breached_within_minutes(
    start: dt.datetime, seed: int, rule_sets: dict[str, rules.RuleSet]
) -> None:
    clock = Clock(start)
    connector = demo(clock, seed=seed)
    store = Store()
    store.sync(connector)
    at_start = {name: store.clocks(start, ruleset) for name, ruleset in rule_sets.items()}
    for _ in range(15):
        clock.advance(60)
        store.sync(connector)

    for name, ruleset in rule_sets.items():
        before = at_start[name]
        waiting = [c for c in before.values() if c.state in ("on_track", "at_risk", "breached")]
        assert len(waiting) >= 10, name  # the board has content at any hour
        assert any(c.state == "at_risk" for c in before.values()), name
        turned = [
            key
            for key, c in store.clocks(clock.now, ruleset).items()
            if c.breached_at is not None
            and start < c.breached_at <= clock.now
            and (key not in before or before[key].state in ("on_track", "at_risk"))
        ]
        assert turned, name


@pytest.mark.parametrize(
    "options",
    [{"seed": "one"}, {"tickets_per_hour": 0}, {"backfill": -1}, {"start": "yesterday"}],
)
def test_bad_options_are_fatal(options: dict[str, object]) -> None:
    with pytest.raises(FatalError):
        DemoConnector("demo", options)


def test_a_foreign_cursor_is_fatal() -> None:
    with pytest.raises(FatalError):
        list(demo(Clock(WEDNESDAY)).sync({"since": "2026-01-01"}, threading.Event()))
