"""Property tests of rules.evaluate over random ticket histories: the result is a function
of the set of events up to ``now`` (not of arrival order, duplicates or later events), the
clocks it reports are consistent with themselves, and a running clock's ``state_at`` tells
what a later evaluation will say.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import rules
from rules import Created, Event, FieldChange, Message, Rating, Removed

M = 60
H = 3600
DAY = 86400
UTC = dt.UTC
ZONES = [UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")]

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BERLIN = {
    "name": "berlin",
    "timezone": "Europe/Berlin",
    "hours": {"mon-fri": ["09:00-12:30", "13:30-18:00"], "sat": ["10:00-14:00"]},
    "holidays": {"country": "DE", "subdivision": "BE", "dates": ["2026-12-24", "2026-12-31"]},
}
SYDNEY = {
    "name": "sydney",
    "timezone": "Australia/Sydney",
    "hours": {"mon-fri": ["08:00-18:00"], "sun": ["01:00-04:00"]},
}
KATHMANDU = {
    "name": "kathmandu",
    "timezone": "Asia/Kathmandu",
    "hours": {"mon-fri": ["10:00-17:00"], "sun": ["10:00-17:00"]},
}

RULESETS = {
    # urgent tickets on a 24x7 clock, the rest in Berlin business hours; tag "ignore"
    # takes a ticket out of every policy
    "berlin": rules.load_rules(
        {
            "calendars": [BERLIN],
            "policies": [
                {
                    "name": "urgent",
                    "match": {"priority": "urgent", "tags_none": ["ignore"]},
                    "calendar": "24x7",
                    "targets": {
                        "first_response": "30m",
                        "next_response": "1h",
                        "periodic_update": "2h",
                        "resolution": "8h",
                    },
                    "warning": "75%",
                },
                {
                    "name": "standard",
                    "match": {"tags_none": ["ignore"]},
                    "calendar": "berlin",
                    "targets": {"first_response": "4h", "next_response": "8h", "resolution": "2d"},
                    "warning": "1h",
                    "pause_on": ["pending"],
                },
            ],
        }
    ),
    # high/urgent in Sydney hours with total resolution time; low in Kathmandu; normal
    # (and anything else) has first response only, 24x7
    "southern": rules.load_rules(
        {
            "calendars": [SYDNEY, KATHMANDU],
            "policies": [
                {
                    "name": "fast",
                    "match": {"priority": ["high", "urgent"]},
                    "calendar": "sydney",
                    "targets": {
                        "first_response": "1h",
                        "periodic_update": "3h",
                        "resolution": "1d",
                    },
                    "pause_on": [],
                    "warning": "50%",
                },
                {
                    "name": "slow",
                    "match": {"priority": "low"},
                    "calendar": "kathmandu",
                    "targets": {"first_response": "1d", "next_response": "1d", "resolution": "5d"},
                    "pause_on": ["on_hold"],
                },
                {"name": "rest", "targets": {"first_response": "2h"}},
            ],
        }
    ),
}
CALENDAR_OF = {
    (name, policy.name): policy.calendar
    for name, ruleset in RULESETS.items()
    for policy in ruleset.policies
}

RUNNING = ("on_track", "at_risk", "breached")


# -- histories ----------------------------------------------------------------------------


def instant(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, UTC)


# NB: events and ``now`` come in several zones. Python compares two datetimes of the same
# zone by wall time (so 02:10 after a fall-back sorts before 02:30 of the first pass), one in
# a DST fold never equals one of another zone (PEP 495), and adding a timedelta is wall-clock
# arithmetic: the tests compare, sort and shift instants by their timestamps.


# Tickets start near the DST switches and New Years of 2025-2027 or anywhere in between.
_LANDMARKS = [
    dt.datetime(2025, 3, 30, 1, tzinfo=UTC),  # Berlin springs forward
    dt.datetime(2025, 10, 26, 1, tzinfo=UTC),  # Berlin falls back
    dt.datetime(2026, 4, 4, 16, tzinfo=UTC),  # Sydney falls back
    dt.datetime(2026, 10, 3, 16, tzinfo=UTC),  # Sydney springs forward
    dt.datetime(2026, 12, 23, 12, tzinfo=UTC),  # Christmas and New Year
    dt.datetime(2027, 3, 28, 1, tzinfo=UTC),
]
starts = st.one_of(
    st.tuples(st.sampled_from(_LANDMARKS), st.integers(-3 * DAY, 3 * DAY)).map(
        lambda p: p[0].timestamp() + p[1]
    ),
    st.integers(
        int(dt.datetime(2025, 1, 1, tzinfo=UTC).timestamp()),
        int(dt.datetime(2027, 12, 1, tzinfo=UTC).timestamp()),
    ).map(float),
)
gaps = st.one_of(
    st.just(0),  # same instant: seq (then id) decides
    st.just(0),
    st.integers(1, 59),
    st.integers(1, 180).map(lambda m: m * M),
    st.integers(1, 72).map(lambda h: h * H),
    st.sampled_from([15 * M, 30 * M, H, 2 * H, 4 * H, 8 * H]),  # as long as a target
    st.integers(-2 * H, -1),  # arrives out of order (maybe even before creation)
)
authors = st.sampled_from(["customer", "customer", "agent", "agent", "system"])
statuses = st.sampled_from(["new", "open", "open", "pending", "on_hold", "solved", "closed"])
priorities = st.sampled_from(["low", "normal", "high", "urgent"])
tags = st.sampled_from([frozenset(), frozenset({"vip"}), frozenset({"ignore"})])
KINDS = ["message"] * 6 + ["status"] * 4 + ["priority"] * 3 + ["tags", "rating", "removed"]


@st.composite
def event_at(
    draw: st.DrawFn, n: int, t: float, prefix: str = "e", kinds: Sequence[str] = KINDS
) -> Event:
    """The n-th event, at ``t``: mostly in the helpdesk's order at its instant."""
    eid = f"{prefix}{n:03d}"
    at = instant(t).astimezone(draw(st.sampled_from(ZONES)))  # aware, any zone
    seq = draw(st.sampled_from([n, n, 0, 1]))
    kind = draw(st.sampled_from(kinds))
    if kind == "message":
        return Message(
            eid, at, draw(authors), public=draw(st.booleans()) or draw(st.booleans()), seq=seq
        )
    if kind == "status":
        return FieldChange(eid, at, "status", draw(statuses), seq=seq)
    if kind == "priority":  # mostly an escalation
        new = draw(st.sampled_from(["urgent", "urgent", "high", "normal", "low"]))
        return FieldChange(eid, at, "priority", new, seq=seq)
    if kind == "tags":
        return FieldChange(eid, at, "tags", draw(tags), seq=seq)
    if kind == "rating":
        return Rating(eid, at, "csat", draw(st.integers(1, 5)), seq=seq)
    return Removed(eid, at, draw(st.sampled_from(["deleted", "merged", "spam"])), seq=seq)


@st.composite
def histories(draw: st.DrawFn, max_updates: int = 10) -> list[Event]:
    """A Created event and up to ``max_updates`` updates of one to three events at one
    instant (as a helpdesk records an agent's reply, status and priority change made in one
    go), with distinct ids."""
    t = draw(starts)
    fields = {
        "status": draw(st.sampled_from(["new", "open"])),
        "priority": draw(priorities),
        "tags": draw(tags),
    }
    by = draw(st.sampled_from(["customer", "agent"]))
    events: list[Event] = [Created("e000", instant(t), fields, by=by, seq=draw(st.integers(0, 2)))]
    if draw(st.booleans()):  # the creator's first message comes with the ticket
        events.append(Message("e001", instant(t), by, seq=events[0].seq + 1))
    for _ in range(draw(st.integers(0, max_updates))):
        t += draw(gaps)
        for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
            events.append(draw(event_at(len(events), t)))
    return events


@st.composite
def moments(draw: st.DrawFn, events: Sequence[Event]) -> dt.datetime:
    """An instant to evaluate at: exactly an event's, just around one, or a while after."""
    base = draw(st.sampled_from(events)).at
    shift = draw(
        st.one_of(
            st.just(0),
            st.integers(-2, 2),
            st.integers(-6 * H, 3 * DAY),
        )
    )
    return instant(base.timestamp() + shift).astimezone(draw(st.sampled_from(ZONES)))


rulesets = st.sampled_from(sorted(RULESETS))


def evaluate(ruleset: str, events: Sequence[Event], now: dt.datetime) -> rules.Evaluation:
    return rules.evaluate("zd", events, RULESETS[ruleset], now)


def show(events: Sequence[Event]) -> None:
    for e in sorted(events, key=lambda e: (e.at.timestamp(), e.seq, e.id)):
        note(repr(e))


# -- (a) order and duplicates ---------------------------------------------------------------


@SETTINGS
@given(ruleset=rulesets, events=histories(), data=st.data())
def test_result_does_not_depend_on_arrival_order_or_duplicates(
    ruleset: str, events: list[Event], data: st.DataObject
) -> None:
    now = data.draw(moments(events))
    expected = evaluate(ruleset, events, now)
    shuffled = data.draw(st.permutations(events))
    repeated = data.draw(st.lists(st.sampled_from(events), max_size=6))
    mixed = data.draw(st.permutations(shuffled + repeated))
    assert evaluate(ruleset, shuffled, now) == expected
    assert evaluate(ruleset, mixed, now) == expected
    assert evaluate(ruleset, events + events, now) == expected


# -- (b) as of an instant -------------------------------------------------------------------


@SETTINGS
@given(ruleset=rulesets, events=histories(), data=st.data())
def test_only_events_up_to_now_count(
    ruleset: str, events: list[Event], data: st.DataObject
) -> None:
    now = data.draw(moments(events))
    expected = evaluate(ruleset, events, now)
    upto = [e for e in events if e.at.timestamp() <= now.timestamp()]
    assert evaluate(ruleset, upto, now) == expected
    # more events after now, some of them removing the ticket or solving it, change nothing
    later = []
    for n in range(data.draw(st.integers(1, 5))):
        t = now.timestamp() + data.draw(st.integers(1, 3 * DAY) | st.just(1))
        later.append(data.draw(event_at(n, t, prefix="x")))
    assert evaluate(ruleset, events + later, now) == expected
    assert evaluate(ruleset, later + events, now) == expected


# -- (c) invariants -------------------------------------------------------------------------


def status_timeline(events: Sequence[Event], now: dt.datetime) -> list[tuple[float, str]]:
    """(instant, status) from creation on as a replay reads the history: once per id, by
    time then helpdesk order, nothing before creation, after removal or after ``now``."""
    unique: dict[str, Event] = {}
    for e in events:
        unique.setdefault(e.id, e)
    out: list[tuple[float, str]] = []
    for e in sorted(unique.values(), key=lambda e: (e.at.timestamp(), e.seq, e.id)):
        if e.at.timestamp() > now.timestamp() or (out and isinstance(e, Removed)):
            break
        if isinstance(e, Created) and not out:
            out.append((e.at.timestamp(), str(e.fields.get("status", "new"))))
        elif out and isinstance(e, FieldChange) and e.field == "status":
            out.append((e.at.timestamp(), str(e.new)))
    return out


def running_seconds(
    calendar: rules.Calendar,
    timeline: list[tuple[float, str]],
    start: float,
    end: float,
    paused_in: frozenset[str],
) -> float:
    """Business seconds in [start, end) during which the status is not in ``paused_in``."""
    total = 0.0
    for i, (t, status) in enumerate(timeline):
        t_next = timeline[i + 1][0] if i + 1 < len(timeline) else end
        a, b = max(t, start), min(t_next, end)
        if a < b and status not in paused_in:
            total += calendar.seconds_between(a, b)
    return total


def check_invariants(
    ruleset: str, events: Sequence[Event], ev: rules.Evaluation, now: dt.datetime
) -> None:
    now = now.astimezone(UTC)
    if ev.created_at is None:
        assert ev.clocks == ()
        return
    ids = [(c.metric, c.cycle) for c in ev.clocks]
    assert len(set(ids)) == len(ids), "a clock reported twice"
    for c in ev.clocks:  # one cycle of next_response or periodic_update at a time
        if c.metric in ("next_response", "periodic_update") and c.running:
            assert not any(o.metric == c.metric and o.cycle > c.cycle for o in ev.clocks)
    assert sum(m == "first_response" for m, _ in ids) <= 1
    policies = {p.name: p for p in RULESETS[ruleset].policies}
    resolutions = sum(m == "resolution" for m, _ in ids)
    assert resolutions <= 1
    open_now = ev.fields["status"] not in ("solved", "closed") and not ev.removed
    if open_now and ev.policy is not None and "resolution" in policies[ev.policy].targets:
        assert resolutions == 1, "the policy has a resolution target but there is no clock"
    for c in ev.clocks:
        note(repr(c))
        assert ev.created_at <= c.started_at <= now
        end = c.stopped_at if c.stopped_at is not None else now
        assert c.started_at <= end <= now
        wall = (end - c.started_at).total_seconds()
        assert 0 <= c.elapsed_seconds <= wall
        if c.state in ("achieved", "missed"):
            assert c.stopped_at is not None
            assert (c.state == "achieved") == (c.elapsed_seconds <= c.target_seconds)
        if c.state in RUNNING:
            assert c.stopped_at is None
            assert c.deadline is not None
            assert c.state_at(now) == c.state
            assert (c.state == "breached") == (now > c.deadline)
        if c.state in ("on_track", "at_risk"):
            assert c.at_risk_at is not None
            assert c.at_risk_at <= c.deadline
            assert (c.state == "at_risk") == (now >= c.at_risk_at)
        if c.state == "paused":
            assert c.deadline is None and c.stopped_at is None
        if c.state in ("breached", "missed"):
            assert c.breached_at is not None, "a breached or missed clock has breached"
        if c.state in ("on_track", "at_risk", "breached", "paused"):
            assert (c.state == "breached") == (c.elapsed_seconds > c.target_seconds)
        if c.breached_at is not None:
            assert c.started_at <= c.breached_at <= end
        if c.policy == "urgent" and c.metric in ("first_response", "next_response"):
            if c.state != "cancelled":  # never paused, 24x7: elapsed is the wall time
                assert c.elapsed_seconds == wall
        if c.state != "cancelled":
            policy = policies[c.policy]
            assert c.target_seconds == policy.targets[c.metric]
            # elapsed is the business time under the clock's policy while the status let
            # it run (response clocks never pause)
            paused_in = {
                "periodic_update": policy.pause_on,
                "resolution": policy.pause_on | {"solved", "closed"},
            }.get(c.metric, frozenset())
            expected = running_seconds(
                policy.calendar,
                status_timeline(events, now),
                c.started_at.timestamp(),
                end.timestamp(),
                paused_in,
            )
            assert c.elapsed_seconds == expected
    if ev.removed:
        assert not any(c.running for c in ev.clocks), "a removed ticket has no running clocks"


@SETTINGS
@given(ruleset=rulesets, events=histories(), data=st.data())
def test_clocks_are_consistent(ruleset: str, events: list[Event], data: st.DataObject) -> None:
    now = data.draw(moments(events))
    show(events)
    ev = evaluate(ruleset, events, now)
    check_invariants(ruleset, events, ev, now)
    # and at the very instants at which a clock turns at risk or breached, and just after
    second = dt.timedelta(seconds=1)
    turns = [t for c in ev.clocks for t in (c.deadline, c.deadline, c.at_risk_at) if t]
    if turns:
        at = data.draw(st.sampled_from(turns)) + data.draw(st.sampled_from([0, 0, 1])) * second
        check_invariants(ruleset, events, evaluate(ruleset, events, at), at)
        # something happens right then (a reply exactly at the deadline, a pause, a solve)
        kinds = ["status", "message"]
        more = [*events, data.draw(event_at(len(events), at.timestamp(), kinds=kinds))]
        then = at + data.draw(st.sampled_from([0, 1, H]) | st.integers(0, 2 * DAY)) * second
        check_invariants(ruleset, more, evaluate(ruleset, more, then), then)


@SETTINGS
@given(ruleset=rulesets, events=histories(), data=st.data())
def test_stopped_clocks_are_final(ruleset: str, events: list[Event], data: st.DataObject) -> None:
    """Whatever happens later, a response or update clock that stopped keeps its result,
    and resolution only adds completions."""
    now = data.draw(moments(events))
    later = instant(now.timestamp() + data.draw(st.integers(0, 4 * DAY)))
    show(events)
    before = {(c.metric, c.cycle): c for c in evaluate(ruleset, events, now).clocks}
    after = {(c.metric, c.cycle): c for c in evaluate(ruleset, events, later).clocks}
    solved_or_removed = {
        e.at.timestamp()
        for e in events
        if isinstance(e, Removed) or (isinstance(e, FieldChange) and e.new in ("solved", "closed"))
    }
    for key, c in before.items():
        if c.metric == "resolution":
            assert key in after, "resolution disappeared"
            assert after[key].completions[: len(c.completions)] == c.completions
        elif c.state in ("achieved", "missed"):
            assert after.get(key) == c
        elif c.state == "cancelled" and c.stopped_at.timestamp() in solved_or_removed:
            # (a clock cancelled because its policy has no target for it may run again
            # under another policy; one cancelled by a solve or a removal may not)
            assert after.get(key) == c


# -- (d) state_at foretells later evaluations -------------------------------------------------


@SETTINGS
@given(ruleset=rulesets, events=histories(), data=st.data())
def test_state_at_foretells_a_later_evaluation(
    ruleset: str, events: list[Event], data: st.DataObject
) -> None:
    now = data.draw(moments(events))
    ev_now = evaluate(ruleset, events, now)
    # later: a while after now, or exactly at (or a second around) a deadline or the
    # instant a clock turns at risk
    second = dt.timedelta(seconds=1)
    turns = [t for c in ev_now.clocks for t in (c.deadline, c.at_risk_at) if t]
    turns = [t + k * second for k in (-1, 0, 1) for t in turns if t + k * second > now]
    shift = data.draw(st.integers(1, 4 * DAY) | st.integers(1, 120))
    later = instant(now.timestamp() + shift)
    if turns and data.draw(st.booleans()):
        later = data.draw(st.sampled_from(turns))
    # nothing happens in (now, later]
    quiet = [e for e in events if not now.timestamp() < e.at.timestamp() <= later.timestamp()]
    show(quiet)
    note(f"now={now.isoformat()} later={later.isoformat()}")
    ev_later = evaluate(ruleset, quiet, later)
    after = {(c.metric, c.cycle): c for c in ev_later.clocks}
    assert set(after) == {(c.metric, c.cycle) for c in ev_now.clocks}
    for c in ev_now.clocks:
        d = after[(c.metric, c.cycle)]
        note(f"now:   {c}\nlater: {d}")
        assert d.state == c.state_at(later)
        if c.state in RUNNING:
            assert d.deadline == c.deadline
            if c.at_risk_at is not None:  # running (not paused past its deadline)
                calendar = CALENDAR_OF[(ruleset, c.policy)]
                grown = calendar.seconds_between(now.timestamp(), later.timestamp())
                assert d.elapsed_seconds == c.elapsed_seconds + grown
        else:
            assert d.elapsed_seconds == c.elapsed_seconds


# -- (e) stopping a clock keeps what it had --------------------------------------------------


@SETTINGS
@given(ruleset=rulesets, events=histories(), data=st.data(), solve=st.booleans())
def test_a_stop_keeps_what_the_running_clock_had(
    ruleset: str, events: list[Event], data: st.DataObject, solve: bool
) -> None:
    """An agent's reply (or a solve) as the last event at ``now`` stops the clocks it
    stops with the elapsed time, breach and policy they had as of ``now`` without it:
    missed exactly when they had run past the target."""
    now = data.draw(moments(events))
    before = evaluate(ruleset, events, now)
    assume(before.created_at is not None and not before.removed)
    assume(not solve or before.fields["status"] not in ("solved", "closed"))
    last = 1 + max((e.seq for e in events if e.at.timestamp() == now.timestamp()), default=0)
    stop: Event = (
        FieldChange("stop", now, "status", "solved", seq=last)
        if solve
        else Message("stop", now, "agent", public=True, seq=last)
    )
    show([*events, stop])
    after = {(c.metric, c.cycle): c for c in evaluate(ruleset, [*events, stop], now).clocks}
    stopped = ("resolution",) if solve else ("first_response", "next_response", "periodic_update")
    for c in before.clocks:
        if c.metric not in stopped or not c.running:
            continue
        d = after.get((c.metric, c.cycle))
        note(f"before: {c}\nafter:  {d}")
        if d is None:  # the reply was the first public message: an outbound ticket
            assert c.metric == "first_response"
            continue
        assert d.state == ("missed" if c.elapsed_seconds > c.target_seconds else "achieved")
        assert d.stopped_at is not None and d.stopped_at.timestamp() == now.timestamp()
        assert (d.policy, d.target_seconds, d.elapsed_seconds) == (
            c.policy,
            c.target_seconds,
            c.elapsed_seconds,
        )
        assert d.breached_at == c.breached_at
