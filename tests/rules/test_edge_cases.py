"""One test per numbered edge case of SLA-SEMANTICS.md ("Edge cases the engine must get
right"). Every expected instant is worked out by hand in the comment beside it.

Reminders: a deadline is the latest instant at which elapsed <= target (a target that runs
out at Friday 17:00 has its deadline at Monday's opening); at_risk_at is the earliest instant
at which elapsed >= warning (80% by default). Berlin is UTC+1 (CET) in winter and UTC+2
(CEST) from 2026-03-29 to 2026-10-25.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from typing import Any

import pytest

import rules
from tests.rules.builders import History, clock, clocks, evaluate, utc

BERLIN = {
    "name": "berlin",
    "timezone": "Europe/Berlin",
    "hours": {"mon-fri": "09:00-17:00"},
    "holidays": {"country": "DE"},
}


def one_policy(
    targets: dict[str, str], calendar: dict[str, Any] | None = None, **policy: Any
) -> rules.RuleSet:
    """A rule set with a single catch-all policy ``std``."""
    return rules.load_rules(
        {
            "calendars": [calendar] if calendar else [],
            "policies": [
                {
                    "name": "std",
                    "calendar": calendar["name"] if calendar else "24x7",
                    "targets": targets,
                    **policy,
                }
            ],
        }
    )


def berlin(hours: dict[str, Any]) -> dict[str, Any]:
    return {"name": "cal", "timezone": "Europe/Berlin", "hours": hours}


def running(evaluation: rules.Evaluation) -> list[rules.Clock]:
    return [c for c in evaluation.clocks if c.running]


# -- 1. created outside opening hours, on a holiday, exactly at opening / closing -------------


@pytest.mark.parametrize(
    ("created", "now", "deadline", "at_risk_at", "elapsed"),
    [
        # Fri 18:30 CET (after close): counts from Mon 09:00 CET; +2h => Mon 11:00 CET = 10:00Z,
        # 80% = 1h36m => 10:36 CET = 09:36Z; nothing elapsed by Fri 20:00Z
        ("2026-11-20T17:30:00", "2026-11-20T20:00:00", "2026-11-23T10:00:00",
         "2026-11-23T09:36:00", 0),
        # Fri 25 Dec 10:00 CET (Christmas), Sat 26 (holiday) and Sun closed: Mon 28 09:00 CET
        # + 2h => 11:00 CET = 10:00Z; at risk at 10:36 CET = 09:36Z; nothing by Sat 12:00Z
        ("2026-12-25T09:00:00", "2026-12-26T12:00:00", "2026-12-28T10:00:00",
         "2026-12-28T09:36:00", 0),
        # Mon 09:00 CET exactly at opening: + 2h => 11:00 CET = 10:00Z, at risk 10:36 CET;
        # at 10:30 CET 1h30m = 5400s have elapsed
        ("2026-11-23T08:00:00", "2026-11-23T09:30:00", "2026-11-23T10:00:00",
         "2026-11-23T09:36:00", 5400),
        # Mon 17:00 CET exactly at closing: counts from Tue 09:00 CET; + 2h => 11:00 CET =
        # 10:00Z, at risk 10:36 CET = 09:36Z; Tue 09:00-10:00 CET = 3600s by Tue 09:00Z
        ("2026-11-23T16:00:00", "2026-11-24T09:00:00", "2026-11-24T10:00:00",
         "2026-11-24T09:36:00", 3600),
    ],
    ids=["after-hours", "holiday", "at-opening", "at-closing"],
)  # fmt: skip
def test_01_created_outside_hours_on_holiday_at_opening_and_closing(
    created: str, now: str, deadline: str, at_risk_at: str, elapsed: int
) -> None:
    ruleset = one_policy({"first_response": "2h"}, BERLIN)
    fr = clock(evaluate(ruleset, History(created), now), "first_response")
    assert fr.started_at == utc(created)
    assert fr.state == "on_track"
    assert fr.elapsed_seconds == elapsed
    assert fr.deadline == utc(deadline)
    assert fr.at_risk_at == utc(at_risk_at)


# -- 2. deadlines across a weekend, a holiday, DST (both ways), New Year ------------------------

NEW_YORK = {"name": "ny", "timezone": "America/New_York", "hours": {"mon-fri": "09:00-17:00"}}
BERLIN_ALL_DAY = berlin({"mon-sun": "00:00-24:00"})


@pytest.mark.parametrize(
    ("calendar", "created", "target", "deadline"),
    [
        # Fri 16:00-17:00 CET = 1h, Mon 09:00 CET + 2h => 11:00 CET = 10:00Z
        (BERLIN, "2026-11-20T15:00:00", "3h", "2026-11-23T10:00:00"),
        # Thu 2 Apr 15:00-17:00 CEST = 2h; Good Friday, weekend, Easter Monday closed;
        # Tue 7 Apr 09:00 CEST + 2h => 11:00 CEST = 09:00Z
        (BERLIN, "2026-04-02T13:00:00", "4h", "2026-04-07T09:00:00"),
        # Thu 24 Dec 16:00-17:00 CET = 1h; 25th (Fri), 26th (Sat) holidays, Sun closed;
        # Mon 28 Dec 09:00 CET + 1h => 10:00 CET = 09:00Z
        (BERLIN, "2026-12-24T15:00:00", "2h", "2026-12-28T09:00:00"),
        # spring forward (Sun 29 Mar): Fri 16:00-17:00 CET = 1h; Mon 09:00 CEST + 1h
        # => 10:00 CEST = 08:00Z
        (BERLIN, "2026-03-27T15:00:00", "2h", "2026-03-30T08:00:00"),
        # fall back (Sun 25 Oct): Fri 16:00-17:00 CEST = 1h; Mon 09:00 CET + 1h
        # => 10:00 CET = 09:00Z
        (BERLIN, "2026-10-23T14:00:00", "2h", "2026-10-26T09:00:00"),
        # always open in Berlin across the 23-hour Sunday: 24 business hours are 24 real
        # hours: Sat 11:00Z + 24h => Sun 11:00Z (13:00 CEST)
        (BERLIN_ALL_DAY, "2026-03-28T11:00:00", "24h", "2026-03-29T11:00:00"),
        # ... and across the 25-hour Sunday: Sat 10:00Z + 24h => Sun 10:00Z (11:00 CET)
        (BERLIN_ALL_DAY, "2026-10-24T10:00:00", "24h", "2026-10-25T10:00:00"),
        # New York spring forward (Sun 8 Mar): Fri 16:00-17:00 EST = 1h; Mon 09:00 EDT + 1h
        # => 10:00 EDT = 14:00Z
        (NEW_YORK, "2026-03-06T21:00:00", "2h", "2026-03-09T14:00:00"),
        # New York fall back (Sun 1 Nov): Fri 16:00-17:00 EDT = 1h; Mon 09:00 EST + 1h
        # => 10:00 EST = 15:00Z
        (NEW_YORK, "2026-10-30T20:00:00", "2h", "2026-11-02T15:00:00"),
        # New Year: Thu 31 Dec 16:00-17:00 CET = 1h; Fri 1 Jan holiday, weekend;
        # Mon 4 Jan 2027 09:00 CET + 3h => 12:00 CET = 11:00Z
        (BERLIN, "2026-12-31T15:00:00", "4h", "2027-01-04T11:00:00"),
    ],
    ids=[
        "weekend", "easter", "christmas", "dst-spring-berlin", "dst-fall-berlin",
        "dst-spring-all-day", "dst-fall-all-day", "dst-spring-new-york", "dst-fall-new-york",
        "new-year",
    ],
)  # fmt: skip
def test_02_deadline_across_weekend_holiday_dst_and_new_year(
    calendar: dict[str, Any], created: str, target: str, deadline: str
) -> None:
    ruleset = one_policy({"first_response": target}, calendar)
    fr = clock(evaluate(ruleset, History(created), created), "first_response")
    assert fr.deadline == utc(deadline)
    assert fr.elapsed_seconds == 0


# -- 3. split shifts, days with different hours, a 24:00 end ------------------------------------

SPLIT = {"mon-fri": ["09:00-12:30", "13:30-18:00"], "sat": "10:00-14:00"}


@pytest.mark.parametrize(
    ("hours", "created", "target", "now", "elapsed", "deadline", "at_risk_at"),
    [
        # Mon 11:30 CET: 11:30-12:30 = 1h by 13:00 CET (lunch does not count); the second
        # hour runs 13:30-14:30 CET = 13:30Z; 80% = 96m: 60m + 36m => 14:06 CET = 13:06Z
        (SPLIT, "2026-11-23T10:30:00", "2h", "2026-11-23T12:00:00", 3600,
         "2026-11-23T13:30:00", "2026-11-23T13:06:00"),
        # Fri 17:00 CET: Fri 17-18 = 1h, Sat 10-14 = 4h, Sun closed, Mon 09:00 + 1h
        # => 10:00 CET = 09:00Z; by Sat 13:00 CET 1h + 3h = 4h; 80% of 6h = 4h48m
        # => Sat 10:00 + 3h48m = 13:48 CET = 12:48Z
        (SPLIT, "2026-11-20T16:00:00", "6h", "2026-11-21T12:00:00", 14400,
         "2026-11-23T09:00:00", "2026-11-21T12:48:00"),
        # Fri 23:00 CET: Fri 23:00-24:00 = 1h runs on into Sat 00:00-01:00 = 1h
        # => Sat 01:00 CET = 00:00Z; by 23:30 CET 30m; 80% = 96m => Sat 00:36 CET = 23:36Z
        ({"fri": "20:00-24:00", "sat": "00:00-04:00"}, "2026-11-20T22:00:00", "2h",
         "2026-11-20T22:30:00", 1800, "2026-11-21T00:00:00", "2026-11-20T23:36:00"),
        # Mon 22:00 CET: Mon 22:00-24:00 = 2h, Tue 18:00 CET + 1h => 19:00 CET = 18:00Z;
        # 80% of 3h = 2h24m => Tue 18:24 CET = 17:24Z
        ({"mon-fri": "18:00-24:00"}, "2026-11-23T21:00:00", "3h", "2026-11-23T22:00:00", 3600,
         "2026-11-24T18:00:00", "2026-11-24T17:24:00"),
    ],
    ids=["split-shift", "saturday-hours", "24:00-into-next-day", "24:00-end"],
)  # fmt: skip
def test_03_split_shifts_different_days_and_midnight_end(
    hours: dict[str, Any],
    created: str,
    target: str,
    now: str,
    elapsed: int,
    deadline: str,
    at_risk_at: str,
) -> None:
    ruleset = one_policy({"first_response": target}, berlin(hours))
    fr = clock(evaluate(ruleset, History(created), now), "first_response")
    assert fr.elapsed_seconds == elapsed
    assert fr.deadline == utc(deadline)
    assert fr.at_risk_at == utc(at_risk_at)


# -- 4. a response exactly at the deadline, and one second after --------------------------------

# Fri 20 Nov 15:00 CET + 2h runs out at Fri 17:00 CET; the latest instant with elapsed <= 2h
# is Mon 23 Nov 09:00 CET = 08:00Z (the weekend adds nothing): that is the deadline.
MONDAY_OPENING = "2026-11-23T08:00:00"


@pytest.mark.parametrize(
    ("reply", "now", "state", "elapsed"),
    [
        (None, "2026-11-21T12:00:00", "at_risk", 7200),  # Saturday: 2h used, nothing more
        (None, "2026-11-23T08:00:00", "at_risk", 7200),  # exactly at the deadline
        (None, "2026-11-23T08:00:01", "breached", 7201),  # one second after
        ("2026-11-23T08:00:00", "2026-11-23T12:00:00", "achieved", 7200),
        ("2026-11-23T08:00:01", "2026-11-23T12:00:00", "missed", 7201),
    ],
    ids=["weekend", "at-deadline", "after-deadline", "reply-at-deadline", "reply-1s-late"],
)
def test_04_response_exactly_at_deadline_and_one_second_after(
    reply: str | None, now: str, state: str, elapsed: int
) -> None:
    ruleset = one_policy({"first_response": "2h"}, BERLIN)
    history = History("2026-11-20T14:00:00")
    if reply:
        history.agent(reply)
    fr = clock(evaluate(ruleset, history, now), "first_response")
    assert fr.state == state
    assert fr.elapsed_seconds == elapsed
    assert fr.deadline == utc(MONDAY_OPENING)
    assert fr.breached_at == (utc(MONDAY_OPENING) if elapsed > 7200 else None)
    assert fr.stopped_at == (utc(reply) if reply else None)


# -- 5. an internal note before the first public reply ------------------------------------------


def test_05_internal_note_does_not_stop_first_response() -> None:
    ruleset = one_policy({"first_response": "1h", "periodic_update": "4h"})
    history = History("2026-11-20T09:00:00").note("2026-11-20T09:10:00")
    history.agent("2026-11-20T09:50:00")

    before_reply = evaluate(ruleset, history, "2026-11-20T09:40:00")
    fr = clock(before_reply, "first_response")
    # 09:00 -> 09:40 = 2400s, still running; deadline 10:00Z; 80% of 1h = 48m => 09:48Z
    assert (fr.state, fr.elapsed_seconds, fr.stopped_at) == ("on_track", 2400, None)
    assert fr.deadline == utc("2026-11-20T10:00:00")
    assert fr.at_risk_at == utc("2026-11-20T09:48:00")
    assert clocks(before_reply, "periodic_update") == []  # a note is no update either

    fr = clock(evaluate(ruleset, history, "2026-11-20T10:00:00"), "first_response")
    # the public reply at 09:50 stops it: 50m = 3000s <= 1h
    assert (fr.state, fr.elapsed_seconds) == ("achieved", 3000)
    assert fr.stopped_at == utc("2026-11-20T09:50:00")


# -- 6. a system message (trigger, auto-reply) before any agent reply ---------------------------


def test_06_system_message_does_not_stop_first_response() -> None:
    ruleset = one_policy({"first_response": "1h", "periodic_update": "4h"})
    history = History("2026-11-20T09:00:00").system("2026-11-20T09:00:05")
    history.agent("2026-11-20T10:20:00")
    evaluation = evaluate(ruleset, history, "2026-11-20T10:30:00")

    fr = clock(evaluation, "first_response")
    # stopped by the agent at 10:20, not by the auto-reply: 1h20m = 4800s > 1h
    assert (fr.state, fr.elapsed_seconds) == ("missed", 4800)
    assert fr.stopped_at == utc("2026-11-20T10:20:00")
    assert fr.breached_at == utc("2026-11-20T10:00:00")  # 09:00 + 1h
    # the auto-reply is no update: the only periodic_update starts at the agent's reply
    assert [c.started_at for c in clocks(evaluation, "periodic_update")] == [
        utc("2026-11-20T10:20:00")
    ]


# -- 7. an outbound ticket ----------------------------------------------------------------------


def test_07_outbound_ticket_has_no_first_response() -> None:
    ruleset = one_policy({"first_response": "1h", "next_response": "1h", "resolution": "8h"})
    history = History("2026-11-20T09:00:00", by="agent")  # created with the agent's mail
    history.customer("2026-11-20T11:00:00").agent("2026-11-20T11:30:00")
    evaluation = evaluate(ruleset, history, "2026-11-20T12:00:00")

    assert clocks(evaluation, "first_response") == []
    nr = clock(evaluation, "next_response")
    # the customer's answer at 11:00 starts next_response, the agent's 11:30 stops it: 1800s
    assert (nr.state, nr.elapsed_seconds) == ("achieved", 1800)
    assert nr.started_at == utc("2026-11-20T11:00:00")
    assert nr.stopped_at == utc("2026-11-20T11:30:00")
    res = clock(evaluation, "resolution")
    # resolution runs from creation: 09:00 -> 12:00 = 10800s
    assert (res.state, res.elapsed_seconds) == ("on_track", 10800)


# -- 8. three customer messages before the agent replies ----------------------------------------


def test_08_several_customer_messages_keep_the_oldest_start() -> None:
    ruleset = one_policy({"first_response": "1h", "next_response": "1h"})
    history = History("2026-11-20T09:00:00").agent("2026-11-20T09:30:00")
    for at in ("2026-11-20T10:00:00", "2026-11-20T10:20:00", "2026-11-20T10:40:00"):
        history.customer(at)

    waiting = evaluate(ruleset, history, "2026-11-20T11:05:00")
    [nr] = clocks(waiting, "next_response")
    # one cycle from the first of the three (10:00): deadline 11:00Z; by 11:05 3900s
    assert nr.started_at == utc("2026-11-20T10:00:00")
    assert (nr.state, nr.elapsed_seconds) == ("breached", 3900)
    assert nr.deadline == nr.breached_at == utc("2026-11-20T11:00:00")

    history.agent("2026-11-20T11:10:00")
    [nr] = clocks(evaluate(ruleset, history, "2026-11-20T11:15:00"), "next_response")
    # 10:00 -> 11:10 = 4200s > 3600s
    assert (nr.state, nr.elapsed_seconds) == ("missed", 4200)
    assert nr.stopped_at == utc("2026-11-20T11:10:00")


# -- 9. pending -> open -> pending -> solved ----------------------------------------------------


def test_09_resolution_pauses_exactly_over_pending_spans() -> None:
    ruleset = one_policy({"resolution": "8h"})  # default pause_on: pending, on_hold
    history = History("2026-11-23T08:00:00").agent("2026-11-23T09:00:00")
    history.status("2026-11-23T09:00:00", "open")
    history.status("2026-11-23T10:00:00", "pending")
    history.status("2026-11-23T12:30:00", "open")
    history.status("2026-11-23T13:00:00", "pending")
    history.status("2026-11-23T16:00:00", "solved")

    res = clock(evaluate(ruleset, history, "2026-11-23T11:00:00"), "resolution")
    # 08:00-10:00 = 2h, then pending
    assert (res.state, res.elapsed_seconds) == ("paused", 7200)

    res = clock(evaluate(ruleset, history, "2026-11-23T12:45:00"), "resolution")
    # 2h + 12:30-12:45 = 8100s; 6h left from 12:30 => 18:30Z; 80% = 6h24m: 4h24m from 12:30
    assert (res.state, res.elapsed_seconds) == ("on_track", 8100)
    assert res.deadline == utc("2026-11-23T18:30:00")
    assert res.at_risk_at == utc("2026-11-23T16:54:00")

    res = clock(evaluate(ruleset, history, "2026-11-23T18:00:00"), "resolution")
    # 08:00-10:00 (2h) + 12:30-13:00 (30m) = 9000s; pending spans 10:00-12:30, 13:00-16:00 out
    assert (res.state, res.elapsed_seconds) == ("achieved", 9000)
    assert res.stopped_at == utc("2026-11-23T16:00:00")
    assert [(c.at, c.elapsed_seconds, c.achieved) for c in res.completions] == [
        (utc("2026-11-23T16:00:00"), 9000, True)
    ]


# -- 10. priority raised after creation ---------------------------------------------------------

URGENT_AND_STANDARD = rules.load_rules(
    {
        "policies": [
            {
                "name": "urgent",
                "match": {"priority": "urgent"},
                "targets": {"first_response": "30m", "resolution": "4h"},
            },
            {"name": "standard", "targets": {"first_response": "4h", "resolution": "3d"}},
        ]
    }
)


def test_10_priority_raised_retargets_running_clocks_from_the_original_start() -> None:
    history = History("2026-11-23T09:00:00", priority="normal")
    history.set("2026-11-23T11:00:00", "priority", "urgent")
    evaluation = evaluate(URGENT_AND_STANDARD, history, "2026-11-23T11:00:00")

    fr = clock(evaluation, "first_response")
    # 30m from 09:00 => 09:30Z, long past when the raise comes at 11:00: breached at once
    assert (fr.policy, fr.target_seconds, fr.state) == ("urgent", 1800, "breached")
    assert fr.deadline == utc("2026-11-23T09:30:00")
    assert fr.breached_at == utc("2026-11-23T11:00:00")  # under 4h it had not breached before
    assert fr.elapsed_seconds == 7200
    res = clock(evaluation, "resolution")
    # 4h from 09:00 => 13:00Z; 80% = 3h12m => 12:12Z; 2h used
    assert (res.policy, res.state, res.elapsed_seconds) == ("urgent", "on_track", 7200)
    assert res.deadline == utc("2026-11-23T13:00:00")
    assert res.at_risk_at == utc("2026-11-23T12:12:00")

    # answered at 10:00 under standard (1h <= 4h): the stopped clock keeps its policy and result
    answered = History("2026-11-23T09:00:00", priority="normal").agent("2026-11-23T10:00:00")
    answered.set("2026-11-23T11:00:00", "priority", "urgent")
    evaluation = evaluate(URGENT_AND_STANDARD, answered, "2026-11-23T11:00:00")
    fr = clock(evaluation, "first_response")
    assert (fr.policy, fr.target_seconds, fr.state, fr.elapsed_seconds) == (
        "standard",
        14400,
        "achieved",
        3600,
    )
    assert clock(evaluation, "resolution").policy == "urgent"


# -- 11. priority lowered after a breach --------------------------------------------------------


def test_11_priority_lowered_after_breach_keeps_the_breach() -> None:
    history = History("2026-11-23T09:00:00", priority="urgent")
    history.set("2026-11-23T10:00:00", "priority", "normal")
    fr = clock(evaluate(URGENT_AND_STANDARD, history, "2026-11-23T10:30:00"), "first_response")
    # breached under urgent at 09:00 + 30m = 09:30Z; now standard: 09:00 + 4h => 13:00Z,
    # 1h30m = 5400s used, at risk at 09:00 + 3h12m = 12:12Z
    assert fr.breached_at == utc("2026-11-23T09:30:00")
    assert (fr.policy, fr.target_seconds, fr.state, fr.elapsed_seconds) == (
        "standard",
        14400,
        "on_track",
        5400,
    )
    assert fr.deadline == utc("2026-11-23T13:00:00")
    assert fr.at_risk_at == utc("2026-11-23T12:12:00")


# -- 12. solved, then reopened by a customer reply ----------------------------------------------


def test_12_reopened_by_customer_resumes_resolution_and_starts_next_response() -> None:
    ruleset = one_policy({"first_response": "1h", "next_response": "2h", "resolution": "8h"})
    history = History("2026-11-20T09:00:00").agent("2026-11-20T09:30:00")
    history.status("2026-11-20T10:00:00", "solved")
    history.customer("2026-11-20T12:00:00").status("2026-11-20T12:00:00", "open")
    evaluation = evaluate(ruleset, history, "2026-11-20T13:00:00")

    [res] = clocks(evaluation, "resolution")
    # the same clock (cycle 0): 09:00-10:00 + 12:00-13:00 = 7200s; 6h left from 12:00
    # => 19:00Z; completed once at the solve (1h <= 8h)
    assert (res.cycle, res.state, res.elapsed_seconds, res.stopped_at) == (
        0,
        "on_track",
        7200,
        None,
    )
    assert res.started_at == utc("2026-11-20T09:00:00")
    assert res.deadline == utc("2026-11-20T19:00:00")
    assert [(c.at, c.elapsed_seconds, c.achieved) for c in res.completions] == [
        (utc("2026-11-20T10:00:00"), 3600, True)
    ]
    [nr] = clocks(evaluation, "next_response")
    # starts with the customer's reply at 12:00: deadline 14:00Z, at risk at 12:00 + 96m
    assert nr.started_at == utc("2026-11-20T12:00:00")
    assert (nr.state, nr.elapsed_seconds) == ("on_track", 3600)
    assert nr.deadline == utc("2026-11-20T14:00:00")
    assert nr.at_risk_at == utc("2026-11-20T13:36:00")


# -- 13. solved with no public agent reply ever -------------------------------------------------


@pytest.mark.parametrize(
    ("target", "breached_at"),
    [("2h", None), ("30m", "2026-11-20T09:30:00")],  # 09:00 + 30m, before the 10:00 solve
)
def test_13_solved_without_reply_cancels_response_clocks(
    target: str, breached_at: str | None
) -> None:
    ruleset = one_policy({"first_response": target, "resolution": "8h"})
    history = History("2026-11-20T09:00:00").note("2026-11-20T09:10:00")
    history.status("2026-11-20T10:00:00", "solved")
    evaluation = evaluate(ruleset, history, "2026-11-20T12:00:00")

    fr = clock(evaluation, "first_response")
    assert (fr.state, fr.completions) == ("cancelled", ())
    assert fr.stopped_at == utc("2026-11-20T10:00:00")
    assert fr.breached_at == (utc(breached_at) if breached_at else None)
    res = clock(evaluation, "resolution")
    # 09:00 -> 10:00 = 3600s <= 8h
    assert (res.state, res.elapsed_seconds) == ("achieved", 3600)
    assert [(c.at, c.elapsed_seconds, c.achieved) for c in res.completions] == [
        (utc("2026-11-20T10:00:00"), 3600, True)
    ]


# -- 14. moved to a team with another calendar --------------------------------------------------


def test_14_queue_move_retargets_under_the_new_calendar() -> None:
    ruleset = rules.load_rules(
        {
            "calendars": [BERLIN, NEW_YORK],
            "policies": [
                {"name": "de", "match": {"queue": "de"}, "calendar": "berlin",
                 "targets": {"first_response": "4h"}},
                {"name": "us", "match": {"queue": "us"}, "calendar": "ny",
                 "targets": {"first_response": "4h"}},
            ],
        }
    )  # fmt: skip
    history = History("2026-11-23T13:00:00", queue="de")  # Mon 14:00 CET = 08:00 EST
    history.set("2026-11-23T15:00:00", "queue", "us")
    fr = clock(evaluate(ruleset, history, "2026-11-23T16:00:00"), "first_response")
    # New York opens 09:00 EST = 14:00Z: 14:00Z-16:00Z = 7200s (not Berlin's 3h);
    # 14:00Z + 4h => 18:00Z; 80% = 3h12m => 17:12Z
    assert (fr.policy, fr.state, fr.elapsed_seconds) == ("us", "on_track", 7200)
    assert fr.deadline == utc("2026-11-23T18:00:00")
    assert fr.at_risk_at == utc("2026-11-23T17:12:00")


# -- 15. a tag that excludes the ticket from all policies ---------------------------------------


def test_15_excluding_tag_cancels_running_clocks() -> None:
    ruleset = one_policy(
        {"first_response": "1h", "resolution": "8h"}, match={"tags_none": ["no-sla"]}
    )
    history = History("2026-11-20T09:00:00").set("2026-11-20T10:30:00", "tags", ["no-sla"])
    evaluation = evaluate(ruleset, history, "2026-11-20T11:00:00")

    assert evaluation.policy is None
    assert running(evaluation) == []
    fr = clock(evaluation, "first_response")
    # breached at 09:00 + 1h = 10:00Z before the tag; cancelled when the tag came (10:30)
    assert (fr.state, fr.completions) == ("cancelled", ())
    assert fr.breached_at == utc("2026-11-20T10:00:00")
    assert fr.stopped_at == utc("2026-11-20T10:30:00")
    res = clock(evaluation, "resolution")
    assert (res.state, res.completions, res.breached_at) == ("cancelled", (), None)
    assert res.stopped_at == utc("2026-11-20T10:30:00")


# -- 16. events out of order or twice -----------------------------------------------------------


def test_16_out_of_order_and_duplicate_events_give_the_same_result() -> None:
    ruleset = one_policy(
        {"first_response": "1h", "next_response": "1h", "periodic_update": "4h",
         "resolution": "8h"}
    )  # fmt: skip
    history = History("2026-11-20T09:00:00").agent("2026-11-20T09:30:00")
    history.customer("2026-11-20T10:00:00").agent("2026-11-20T10:45:00")
    history.status("2026-11-20T11:00:00", "solved")
    in_order = evaluate(ruleset, history, "2026-11-20T12:00:00")
    assert sorted((c.metric, c.cycle, c.state, c.elapsed_seconds) for c in in_order.clocks) == [
        ("first_response", 0, "achieved", 1800),  # 09:00 -> 09:30
        ("next_response", 0, "achieved", 2700),  # 10:00 -> 10:45
        ("periodic_update", 0, "achieved", 4500),  # 09:30 -> 10:45
        ("periodic_update", 1, "cancelled", 0),  # 10:45 -> solved at 11:00
        ("resolution", 0, "achieved", 7200),  # 09:00 -> 11:00
    ]

    events = history.events
    scrambled = [*reversed(events), *events[1::2], *(dataclasses.replace(e) for e in events)]
    assert evaluate(ruleset, scrambled, "2026-11-20T12:00:00") == in_order


# -- 17. deleted, merged, spam ------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["deleted", "merged", "spam"])
def test_17_removed_ticket_loses_running_clocks_without_result(reason: Any) -> None:
    ruleset = one_policy(
        {"first_response": "1h", "next_response": "1h", "periodic_update": "4h",
         "resolution": "8h"}
    )  # fmt: skip
    history = History("2026-11-20T09:00:00").agent("2026-11-20T09:30:00")
    history.customer("2026-11-20T10:00:00").removed("2026-11-20T10:30:00", reason)
    # a day later, long past every deadline the running clocks had
    evaluation = evaluate(ruleset, history, "2026-11-21T12:00:00")

    assert evaluation.removed
    assert running(evaluation) == []
    fr = clock(evaluation, "first_response")  # stopped before: keeps its result
    assert (fr.state, fr.elapsed_seconds) == ("achieved", 1800)
    for metric in ("next_response", "periodic_update", "resolution"):
        c = clock(evaluation, metric)
        assert (c.state, c.completions, c.breached_at) == ("cancelled", (), None), metric
        assert c.stopped_at == utc("2026-11-20T10:30:00"), metric


# -- 18. a calendar with no opening hours -------------------------------------------------------


def _within(seconds: float, call: Any) -> Any:
    """``call()``'s result or exception, failing the test if it takes longer (a hang)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds}s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.parametrize("hours", [{}, {"mon-fri": []}, {"mon": [], "sat": []}])
def test_18_calendar_without_opening_hours_is_a_config_error(hours: dict[str, Any]) -> None:
    raw = {
        "calendars": [{"name": "never", "timezone": "Europe/Berlin", "hours": hours}],
        "policies": [{"name": "std", "calendar": "never", "targets": {"first_response": "1h"}}],
    }
    with pytest.raises(rules.ConfigError) as error:
        _within(5, lambda: rules.load_rules(raw))
    assert error.value.key == "calendars[0].hours"

    # open hours exist but every Saturday of 2026 and 2027 is a holiday: the next opening is
    # Sat 1 Jan 2028 10:00Z; + 30m => 10:30Z, found (not a hang, not an error)
    saturdays = [dt.date(2026, 1, 3) + dt.timedelta(weeks=n) for n in range(104)]
    assert saturdays[-1] == dt.date(2027, 12, 25)
    far = {"name": "far", "hours": {"sat": "10:00-11:00"}, "holidays": {"dates": saturdays}}
    ruleset = one_policy({"first_response": "30m"}, far)
    history = History("2026-01-01T00:00:00")
    evaluation = _within(5, lambda: evaluate(ruleset, history, "2026-01-01T00:00:00"))
    assert clock(evaluation, "first_response").deadline == utc("2028-01-01T10:30:00")


# -- 19. evaluation as of an instant between events ---------------------------------------------


def test_19_evaluation_as_of_an_instant_uses_only_events_up_to_it() -> None:
    ruleset = one_policy({"first_response": "1h", "next_response": "1h", "resolution": "8h"})
    history = History("2026-11-20T09:00:00").agent("2026-11-20T09:30:00")
    history.customer("2026-11-20T10:00:00").agent("2026-11-20T11:30:00")
    history.status("2026-11-20T12:00:00", "solved")

    early = evaluate(ruleset, history, "2026-11-20T10:50:00")
    [nr] = clocks(early, "next_response")
    # 10:00 -> 10:50 = 3000s; deadline 11:00Z; at risk from 10:00 + 48m = 10:48Z
    assert (nr.state, nr.elapsed_seconds, nr.stopped_at) == ("at_risk", 3000, None)
    assert nr.deadline == utc("2026-11-20T11:00:00")
    assert nr.at_risk_at == utc("2026-11-20T10:48:00")
    res = clock(early, "resolution")
    # 09:00 -> 10:50 = 6600s, not solved yet
    assert (res.state, res.elapsed_seconds, res.completions) == ("on_track", 6600, ())

    at_reply = evaluate(ruleset, history, "2026-11-20T11:30:00")  # an event at `now` counts
    nr = clock(at_reply, "next_response")
    assert (nr.state, nr.elapsed_seconds) == ("missed", 5400)  # 10:00 -> 11:30
    res = clock(at_reply, "resolution")
    # 09:00 -> 11:30 = 9000s, the 12:00 solve not yet seen; 8h => 17:00Z
    assert (res.state, res.elapsed_seconds) == ("on_track", 9000)
    assert res.deadline == utc("2026-11-20T17:00:00")
    assert res.completions == ()


# -- 20. very old tickets and very large targets ------------------------------------------------


def test_20_old_tickets_and_large_targets_are_exact_and_fast() -> None:
    started = time.perf_counter()

    # 30 business days = 240h under Berlin (DE holidays). From Mon 30 Nov 13:00 CET: 4h that
    # day; full days Dec 1-4, 7-11, 14-18, 21-24 (25th, 26th holidays), 28-31 (1 Jan holiday),
    # Jan 4-8, 11-12 = 29 days = 232h; the last 4h on Wed 13 Jan => 13:00 CET = 12:00Z.
    ruleset = one_policy({"resolution": "240h"}, BERLIN)
    history = History("2026-11-30T12:00:00")
    res = clock(evaluate(ruleset, history, "2026-12-24T16:00:00"), "resolution")
    assert res.deadline == utc("2027-01-13T12:00:00")
    # by Thu 24 Dec 17:00 CET: 4h + 18 full days (Dec 1-24) = 148h = 532800s
    assert res.elapsed_seconds == 532800
    # 80% = 192h = 4h + 23 full days (through Mon 4 Jan) + 4h on Tue 5 Jan => 13:00 CET
    assert res.at_risk_at == utc("2027-01-05T12:00:00")

    # Open for six years under mon-fri 09-17 Berlin (no holidays: 8h every weekday, DST or
    # not): weekdays 2020..2025 = 262 + 261 + 260 + 260 + 262 + 261 = 1566 -> 12528h.
    # 240h from Wed 1 Jan 2020 09:00 CET: 30 weekdays Jan 1 .. Tue 11 Feb, run out at 17:00
    # => deadline Wed 12 Feb 09:00 CET = 08:00Z.
    office = berlin({"mon-fri": "09:00-17:00"})
    ruleset = one_policy({"resolution": "240h"}, office)
    old = History("2020-01-01T08:00:00")
    res = clock(evaluate(ruleset, old, "2026-01-01T08:00:00"), "resolution")
    assert res.elapsed_seconds == 1566 * 8 * 3600 == 45_100_800
    assert res.state == "breached"
    assert res.deadline == res.breached_at == utc("2020-02-12T08:00:00")

    assert time.perf_counter() - started < 2.0


# -- 21. 30/45-minute offsets and southern-hemisphere DST ---------------------------------------

SYDNEY = {
    "name": "cal",
    "timezone": "Australia/Sydney",
    "hours": {"mon-fri": "09:00-17:00"},
    "holidays": {"country": "AU", "subdivision": "NSW"},
}


@pytest.mark.parametrize(
    ("calendar", "created", "deadline"),
    [
        # Mon 17:00 IST (+05:30): 17-18 = 1h; Tue 09:00 IST = 03:30Z + 1h => 04:30Z
        ({"name": "cal", "timezone": "Asia/Kolkata", "hours": {"mon-fri": "09:00-18:00"}},
         "2026-11-23T11:30:00", "2026-11-24T04:30:00"),
        # Mon 17:30 NPT (+05:45), after close: Tue 10:00 NPT = 04:15Z + 2h => 06:15Z
        ({"name": "cal", "timezone": "Asia/Kathmandu", "hours": {"mon-fri": "10:00-17:00"}},
         "2026-11-23T11:45:00", "2026-11-24T06:15:00"),
        # Sydney forward (Sun 4 Oct): Fri 16:00 AEST (+10) 16-17 = 1h; Mon 5 Oct Labour Day
        # (NSW); Tue 09:00 AEDT (+11) = Mon 22:00Z + 1h => 23:00Z
        (SYDNEY, "2026-10-02T06:00:00", "2026-10-05T23:00:00"),
        # Sydney back (Sun 5 Apr): Thu 16:00 AEDT (+11) 16-17 = 1h; Easter Fri-Mon closed;
        # Tue 7 Apr 09:00 AEST (+10) = Mon 23:00Z + 1h => Tue 00:00Z
        (SYDNEY, "2026-04-02T05:00:00", "2026-04-07T00:00:00"),
    ],
    ids=["kolkata", "kathmandu", "sydney-forward", "sydney-back"],
)  # fmt: skip
def test_21_odd_offsets_and_southern_dst(
    calendar: dict[str, Any], created: str, deadline: str
) -> None:
    ruleset = one_policy({"first_response": "2h"}, calendar)
    fr = clock(evaluate(ruleset, History(created), created), "first_response")
    assert fr.deadline == utc(deadline)


# -- 22. a customer message and an agent reply at the same instant ------------------------------


@pytest.mark.parametrize("customer_first", [True, False])
def test_22_identical_timestamps_follow_the_helpdesk_order(customer_first: bool) -> None:
    ruleset = one_policy({"first_response": "1h", "next_response": "1h"})
    same = utc("2026-11-20T10:00:00")
    events: list[rules.Event] = [
        rules.Created("t", utc("2026-11-20T09:00:00")),
        rules.Message("m0", utc("2026-11-20T09:00:00"), "customer", seq=1),
        rules.Message("m1", utc("2026-11-20T09:30:00"), "agent"),
        # ids sort the other way round from the customer-first order: seq must decide
        rules.Message("z-customer", same, "customer", seq=1 if customer_first else 2),
        rules.Message("a-agent", same, "agent", seq=2 if customer_first else 1),
    ]
    evaluation = evaluate(ruleset, reversed(events), "2026-11-20T12:00:00")

    nr = clock(evaluation, "next_response")
    assert nr.started_at == same
    if customer_first:  # answered at the same instant: 0s
        assert (nr.state, nr.elapsed_seconds, nr.stopped_at) == ("achieved", 0, same)
    else:  # the customer wrote after the reply: still waiting, 10:00 + 1h => 11:00Z
        assert (nr.state, nr.elapsed_seconds, nr.stopped_at) == ("breached", 7200, None)
        assert nr.deadline == utc("2026-11-20T11:00:00")


# -- 23. satisfaction ratings changed after the fact --------------------------------------------


def test_23_latest_rating_counts() -> None:
    ruleset = one_policy({"resolution": "8h"})
    history = History("2026-11-20T09:00:00").status("2026-11-20T10:00:00", "solved")
    history.rating("2026-11-24T10:00:00", "csat", 1).rating("2026-11-25T10:00:00", "csat", 5)
    late_first = [*history.events[:3], history.events[4], history.events[3]]

    assert evaluate(ruleset, late_first, "2026-11-26T00:00:00").ratings == {"csat": 5}
    assert evaluate(ruleset, history, "2026-11-24T12:00:00").ratings == {"csat": 1}


# -- 24. a policy's targets changed in config ---------------------------------------------------


def test_24_changed_targets_retarget_running_clocks_and_keep_stopped_results() -> None:
    old = one_policy({"first_response": "1h", "next_response": "1h", "resolution": "8h"})
    new = one_policy({"first_response": "30m", "next_response": "20m", "resolution": "1h"})

    history = History("2026-11-20T09:00:00").agent("2026-11-20T09:50:00")
    history.customer("2026-11-20T10:00:00")
    stored = evaluate(old, history, "2026-11-20T10:30:00").clocks
    evaluation = evaluate(new, history, "2026-11-20T10:35:00", previous=stored)

    fr = clock(evaluation, "first_response")
    # answered after 50m under the old 1h: stays achieved against 3600s
    assert (fr.state, fr.target_seconds, fr.elapsed_seconds) == ("achieved", 3600, 3000)
    nr = clock(evaluation, "next_response")
    # re-targeted from its start 10:00: + 20m => 10:20Z, 35m = 2100s used
    assert (nr.state, nr.target_seconds, nr.elapsed_seconds) == ("breached", 1200, 2100)
    assert nr.deadline == nr.breached_at == utc("2026-11-20T10:20:00")
    res = clock(evaluation, "resolution")
    # 09:00 + 1h => 10:00Z; 1h35m = 5700s used
    assert (res.state, res.target_seconds, res.elapsed_seconds) == ("breached", 3600, 5700)
    assert res.deadline == utc("2026-11-20T10:00:00")

    solved = History("2026-11-20T09:00:00").agent("2026-11-20T09:50:00")
    solved.status("2026-11-20T10:10:00", "solved")
    stored = evaluate(old, solved, "2026-11-20T10:30:00").clocks
    res = clock(evaluate(new, solved, "2026-11-20T10:35:00", previous=stored), "resolution")
    # solved after 1h10m = 4200s under the old 8h: stays achieved
    assert (res.state, res.target_seconds, res.elapsed_seconds) == ("achieved", 28800, 4200)
    assert [(c.at, c.target_seconds, c.achieved) for c in res.completions] == [
        (utc("2026-11-20T10:10:00"), 28800, True)
    ]


# -- 25. closed without solved ------------------------------------------------------------------


def test_25_closed_without_solved_is_a_solve() -> None:
    ruleset = one_policy({"first_response": "1h", "next_response": "1h", "resolution": "8h"})
    history = History("2026-11-20T09:00:00").agent("2026-11-20T09:30:00")
    history.customer("2026-11-20T10:00:00").status("2026-11-20T11:00:00", "closed")
    evaluation = evaluate(ruleset, history, "2026-11-20T12:00:00")

    res = clock(evaluation, "resolution")
    # 09:00 -> 11:00 = 7200s <= 8h, one completion at the close
    assert (res.state, res.elapsed_seconds) == ("achieved", 7200)
    assert res.stopped_at == utc("2026-11-20T11:00:00")
    assert [(c.at, c.achieved) for c in res.completions] == [(utc("2026-11-20T11:00:00"), True)]
    nr = clock(evaluation, "next_response")
    # 10:00 -> 11:00 is exactly 1h: not breached, cancelled by the close without a result
    assert (nr.state, nr.completions, nr.breached_at) == ("cancelled", (), None)
    assert nr.stopped_at == utc("2026-11-20T11:00:00")
    assert running(evaluation) == []

    # solved, then closed: one solve, one completion
    history = History("2026-11-20T09:00:00").agent("2026-11-20T09:30:00")
    history.status("2026-11-20T11:00:00", "solved").status("2026-11-20T11:30:00", "closed")
    res = clock(evaluate(ruleset, history, "2026-11-20T12:00:00"), "resolution")
    assert (res.state, res.elapsed_seconds, res.stopped_at) == (
        "achieved",
        7200,
        utc("2026-11-20T11:00:00"),
    )
    assert len(res.completions) == 1


# -- same-second policy changes (found by the property tests) -----------------------------------

SAME_SECOND = {
    "policies": [
        {"name": "urgent", "match": {"priority": ["urgent"]},
         "targets": {"first_response": "30m", "resolution": "8h"}},
        {"name": "standard", "match": {"tags_none": ["ignore"]},
         "targets": {"first_response": "4h", "resolution": "2d"}},
    ]
}  # fmt: skip


def test_two_changes_then_a_reply_in_one_second_keep_the_breach() -> None:
    ruleset = rules.load_rules(SAME_SECOND)
    history = (
        History("2026-11-23T09:00:00", tags=["ignore"])
        .set("2026-11-23T10:00:00", "tags", [])
        .set("2026-11-23T10:00:00", "priority", "urgent")
    )
    running = clock(evaluate(ruleset, history, "2026-11-23T10:00:00"), "first_response")
    assert running.state == "breached" and running.breached_at == utc("2026-11-23T10:00:00")
    history.agent("2026-11-23T10:00:00")
    # 09:00-10:00 = 1h against the urgent 30m, breached at the re-target instant 10:00
    stopped = clock(evaluate(ruleset, history, "2026-11-23T10:00:00"), "first_response")
    assert stopped.state == "missed" and stopped.breached_at == utc("2026-11-23T10:00:00")


def test_a_policy_replaced_within_its_second_never_applied() -> None:
    ruleset = rules.load_rules(SAME_SECOND)
    history = (
        History("2026-11-23T09:00:00")
        .set("2026-11-23T10:00:00", "priority", "urgent")
        .set("2026-11-23T10:00:00", "priority", "normal")
    )
    running = clock(evaluate(ruleset, history, "2026-11-23T10:05:00"), "first_response")
    assert running.policy == "standard" and running.state == "on_track"
    assert running.breached_at is None
    history.agent("2026-11-23T10:00:00")
    stopped = clock(evaluate(ruleset, history, "2026-11-23T10:05:00"), "first_response")
    assert stopped.state == "achieved" and stopped.breached_at is None
