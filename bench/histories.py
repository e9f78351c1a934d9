"""Synthetic ticket histories and rules for the benchmarks (seeded, so runs compare)."""

from __future__ import annotations

import datetime as dt
import random

from rules import Created, Event, FieldChange, Message, Rating, RuleSet, load_rules

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

RULES = {
    "calendars": [
        {
            "name": "berlin-office",
            "timezone": "Europe/Berlin",
            "hours": {"mon-fri": ["09:00-12:30", "13:30-18:00"], "sat": "10:00-14:00"},
            "holidays": {"country": "DE", "subdivision": "BE"},
        },
        {
            "name": "new-york",
            "timezone": "America/New_York",
            "hours": {"mon-fri": "08:00-20:00"},
            "holidays": {"country": "US"},
        },
    ],
    "policies": [
        {
            "name": "urgent",
            "match": {"priority": ["urgent"]},
            "targets": {"first_response": "30m", "next_response": "1h", "resolution": "4h"},
        },
        {
            "name": "americas",
            "match": {"queue": ["us"]},
            "calendar": "new-york",
            "targets": {"first_response": "2h", "next_response": "4h", "resolution": "2d"},
            "warning": "30m",
        },
        {
            "name": "standard",
            "match": {"tags_none": ["no-sla"]},
            "calendar": "berlin-office",
            "targets": {
                "first_response": "4h",
                "next_response": "8h",
                "periodic_update": "1d",
                "resolution": "3d",
            },
        },
    ],
}


def ruleset() -> RuleSet:
    return load_rules(RULES)


def history(rng: random.Random, number: int) -> list[Event]:
    """One ticket's life: 5-20 events of conversation, status moves and the odd
    priority change or rating, spread over two years."""
    t = START + dt.timedelta(seconds=rng.randrange(0, 2 * 365 * 86400))
    fields = {
        "status": "new",
        "priority": rng.choices(["low", "normal", "high", "urgent"], [2, 6, 2, 1])[0],
        "queue": rng.choice(["eu", "eu", "us", "billing"]),
        "channel": rng.choice(["email", "web", "chat"]),
        "tags": frozenset(rng.sample(["vip", "no-sla", "bug", "refund"], rng.randint(0, 2))),
    }
    events: list[Event] = [Created(f"{number}-c", t, fields)]
    events.append(Message(f"{number}-m0", t, "customer", seq=1))
    status = "new"
    size = rng.randint(5, 20)
    k = 0
    while len(events) < size:
        k += 1
        t += dt.timedelta(seconds=rng.randrange(60, 8 * 3600))
        roll = rng.random()
        eid = f"{number}-{k}"
        if roll < 0.35:
            events.append(Message(eid, t, "agent", public=rng.random() < 0.85))
            if status in ("new", "open") and rng.random() < 0.5 and len(events) < size:
                status = "pending"
                events.append(FieldChange(eid + "s", t, "status", status, seq=1))
        elif roll < 0.65:
            events.append(Message(eid, t, rng.choices(["customer", "system"], [5, 1])[0]))
            if status in ("pending", "solved") and len(events) < size:
                status = "open"
                events.append(FieldChange(eid + "s", t, "status", status, seq=1))
        elif roll < 0.85:
            status = rng.choice(["open", "on_hold", "solved", "pending"])
            events.append(FieldChange(eid, t, "status", status))
        elif roll < 0.95:
            new = rng.choice(["low", "normal", "high", "urgent"])
            events.append(FieldChange(eid, t, "priority", new))
        else:
            events.append(Rating(eid, t, "csat", rng.randint(1, 5)))
    assert 5 <= len(events) <= 20
    rng.shuffle(events)  # connectors deliver in any order; the engine must not care
    return events
