"""The same story from every helpdesk, side by side: the shared scenario
(tests/fakes/scenario.py) told by Zendesk, Freshdesk, Jira, Zammad and Help Scout (their
fakes) and by a real Request Tracker (under libfaketime, so at the story's own instants),
each synced into a real monitor by the connector module's own ``tell_story``. For every
story and source the clocks the monitor stores are the engine's clocks for the story itself
(``scenario.expected_events``), except where :data:`TOLD_AS` says the source cannot tell the
story exactly; there they are the engine's clocks for the source's documented telling, and
only the pairs in :data:`CLOCKS_DIFFER` may differ from the story's. ``pytest -s`` (or
``-rP``) shows the matrix."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import rules
from monitor.counters import Tally
from monitor.evaluator import refresh
from monitor.models import Ticket, db
from rules.events import Event
from tests.connectors import harness
from tests.connectors import test_freshdesk as freshdesk
from tests.connectors import test_helpscout as helpscout
from tests.connectors import test_jira as jira
from tests.connectors import test_rt as rt_tests
from tests.connectors import test_zammad as zammad
from tests.connectors import test_zendesk as zendesk
from tests.fakes import scenario
from tests.fakes.freshdesk import FakeFreshdesk
from tests.fakes.helpscout import FakeHelpScout
from tests.fakes.jira import FakeJira
from tests.fakes.scenario import STORIES, T0, Story
from tests.fakes.serve import fake_server
from tests.fakes.zammad import FakeZammad
from tests.fakes.zendesk import FakeZendesk
from tests.services import RequestTracker, request_tracker

AT = T0 + dt.timedelta(days=2)  # every monitor's stored histories are evaluated at this instant
RULES = rules.load_rules(scenario.RULES)
SOURCES = ("zendesk", "freshdesk", "jira", "zammad", "helpscout", "rt")
Telling = Callable[[Story], list[Event]]


def freshdesk_telling(story: Story) -> list[Event]:
    events = scenario.expected_events(story)
    return [e for n, e in enumerate(events) if (story.key, n) not in freshdesk.EXCLUDED]


def helpscout_telling(story: Story) -> list[Event]:
    return scenario.expected_events(helpscout.told(story))


# (source, story) -> why the source cannot tell the story exactly, and how it tells it (each
# connector test module documents its telling; the stored clocks must be its engine clocks).
TOLD_AS: dict[tuple[str, str], tuple[str, Telling]] = {
    ("freshdesk", "refund"): ("no auto-reply (a mail notification, not a conversation)",
                              freshdesk_telling),
    ("jira", "printer"): ("its rating at the resolution (CSAT has no time)", jira.as_told_by_jira),
    ("jira", "invoice"): ("its rating at the resolution (CSAT has no time)", jira.as_told_by_jira),
    ("zammad", "printer"): ("no rating (no API for them)", zammad.zammad_events),
    ("zammad", "invoice"): ("no rating (no API for them)", zammad.zammad_events),
    ("helpscout", "invoice"): ("no priority history: low all along", helpscout_telling),
    ("rt", "printer"): ("no rating; RT's auto-reply; opened on reply; stalled = on_hold",
                        rt_tests.as_told_by_rt),
    ("rt", "refund"): ("RT's auto-reply at the creation, not at 11 minutes",
                       rt_tests.as_told_by_rt),
    ("rt", "login"): ("RT's auto-reply; opened on reply; stalled = on_hold",
                      rt_tests.as_told_by_rt),
    ("rt", "invoice"): ("no rating; RT's auto-reply", rt_tests.as_told_by_rt),
    ("rt", "renewal"): ("RT's auto-reply; opened by the customer's answer at 300, not 301",
                        rt_tests.as_told_by_rt),
}  # fmt: skip
# The pairs whose clocks differ from the story's: Help Scout reads priorities from tags as of
# its first read, so "invoice" stays low and is judged by the office-hours policy throughout.
CLOCKS_DIFFER = {("helpscout", "invoice")}


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RequestTracker]:
    clock = tmp_path_factory.mktemp("rt-clock") / "faketime"
    with request_tracker(timezone="Europe/Berlin", faketime_file=clock) as server:
        yield server


def told(source: str, rt: RequestTracker, tmp_path: Path) -> tuple[Any, dict[str, str]]:
    """The scenario told by ``source`` into a monitor of its own: (app, story -> ticket id)."""
    path = tmp_path / source
    path.mkdir()
    if source == "rt":
        return rt_tests.tell_story(rt, path)
    if source == "freshdesk":
        fake = FakeFreshdesk(now=T0 - dt.timedelta(hours=1))
        with fake.serving() as url:
            app, ids = freshdesk.tell_story(fake, url, path)
        return app, {key: str(tid) for key, tid in ids.items()}
    makers: dict[str, tuple[Callable[[], Any], Callable[..., tuple[Any, dict[str, int]]]]] = {
        "zendesk": (lambda: FakeZendesk(zendesk.EMAIL, zendesk.TOKEN, zendesk.OAUTH,
                                        clock=zendesk.NOW.timestamp), zendesk.tell_story),
        "jira": (lambda: FakeJira(jira.EMAIL, jira.TOKEN, jira.PAT), jira.tell_story),
        "zammad": (lambda: FakeZammad(zammad.TOKEN, version=6), zammad.tell_story),
        "helpscout": (lambda: FakeHelpScout(helpscout.APP_ID, helpscout.APP_SECRET),
                      helpscout.tell_story),
    }  # fmt: skip
    make, tell = makers[source]
    with fake_server() as server:
        app, ids = tell(server.serve(make()), server.url, path)
    return app, {key: str(tid) for key, tid in ids.items()}


def stored_at(app: Any, ids: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    """Each story's stored clocks once the monitor has evaluated its tickets at ``AT``."""
    with app.app_context():
        tickets = {
            key: db.session.scalars(select(Ticket).where(Ticket.source_id == tid)).one()
            for key, tid in ids.items()
        }
        ruleset = app.extensions["slamon"].rules
        refresh(db.session, [t.id for t in tickets.values()], ruleset, AT, Tally())
        clocks = {key: harness.stored_clocks(ticket.id) for key, ticket in tickets.items()}
        db.session.rollback()
    return clocks


def engine(events: list[Event]) -> list[tuple[Any, ...]]:
    return harness.engine_clocks(rules.evaluate("x", events, RULES, AT))


def test_the_same_story_gives_the_same_clocks_from_every_source(rt, tmp_path):
    matrix: dict[str, dict[str, str]] = {story.key: {} for story in STORIES}
    differ, notes = set(), list[str]()
    for source in SOURCES:
        app, ids = told(source, rt, tmp_path)
        stored = stored_at(app, ids)
        for story in STORIES:
            pair = (source, story.key)
            direct = engine(scenario.expected_events(story))
            assert stored[story.key], pair
            if pair in TOLD_AS:
                why, telling = TOLD_AS[pair]
                events = telling(story)
                # a real difference in the telling, not a stale entry
                assert harness.shape(events) != harness.shape(scenario.expected_events(story))
                assert stored[story.key] == engine(events), pair
            else:
                assert stored[story.key] == direct, pair
            same = stored[story.key] == direct
            if not same:
                differ.add(pair)
                notes.append(f"[{len(notes) + 1}] {source}, {story.key}: {TOLD_AS[pair][0]}")
            cell = "same*" if pair in TOLD_AS else "same"
            matrix[story.key][source] = cell if same else f"told as [{len(notes)}]"
    print("\nthe story's clocks from each source (* told otherwise, same clocks):")
    print("".join(f"{cell:<13}" for cell in ("", *SOURCES)).rstrip())
    for story in STORIES:
        print("".join(f"{cell:<13}" for cell in (story.key, *matrix[story.key].values())).rstrip())
    print("\n".join(notes))
    assert differ == CLOCKS_DIFFER
