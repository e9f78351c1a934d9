"""The simulated helpdesk: its queues and what customers write about, the organizations
they work for, when the team works and how fast it answers, when customers write back."""

from __future__ import annotations

import datetime as dt
from random import Random
from zoneinfo import ZoneInfo

from rules.events import FieldValue

MINUTE, HOUR, DAY = 60, 3600, 86400
BERLIN = ZoneInfo("Europe/Berlin")
# The team's hours in Berlin by weekday (Monday = 0): a little wider than office hours,
# and a Saturday morning shift. On-call agents answer urgent and high tickets at any hour.
STAFF_HOURS = {day: (dt.time(8, 30), dt.time(18, 15)) for day in range(5)} | {
    5: (dt.time(9, 45), dt.time(14, 0))
}
URL = "https://demo.slamon.invalid/tickets/{}"

PRIORITIES = ("low", "normal", "high", "urgent")
CHANNELS = ("email", "web", "chat", "phone", "social")
TYPES = ("question", "problem", "incident", "task")
SUBJECTS = {
    "billing": (
        "Invoice shows the wrong amount",
        "Refund for a cancelled order",
        "Charged twice this month",
        "Please update our billing address",
        "VAT number missing on the invoice",
    ),
    "technical": (
        "Error 500 when exporting reports",
        "Cannot log in since the update",
        "API returns 429 Too Many Requests",
        "Calendar sync stopped working",
        "Mobile app crashes on start",
    ),
    "accounts": (
        "Add three seats to our plan",
        "Reset two-factor authentication",
        "Transfer account ownership",
        "Please delete my account",
        "Set up SSO with our identity provider",
    ),
    "sales": (
        "Quote for 50 licences",
        "Upgrading to the Enterprise plan",
        "Discount for non-profits?",
        "Extend our trial",
        "Request a product demo",
    ),
}
QUEUES = tuple(SUBJECTS)
OUTAGE_SUBJECTS = (
    "Dashboard not loading",
    "Login page times out",
    "Everything is down for us",
    "API unreachable",
    "Reports stuck on 'processing'",
)
ORGANIZATIONS = (
    "Acme GmbH",
    "Globex",
    "Initech",
    "Umbrella Labs",
    "Stark Logistics",
    "Wayne Media",
    "Hooli",
    "Vandelay Imports",
    "Soylent Foods",
    "Tyrell Systems",
    "Wonka Retail",
    "Oceanic Air",
    "Nakatomi Trading",
    "Massive Dynamic",
    "Aperture Science",
    "Pied Piper",
)
VIP = frozenset({"Globex", "Tyrell Systems", "Massive Dynamic"})

# Minutes to an agent's answer — of working time, or around the clock when on call — as
# (shortest, longest) for: the first answer on time, the first answer late, a later
# answer on time, a later answer late. On time means within the demo's targets.
RESPONSE_MINUTES = {
    "low": ((10, 215), (270, 830), (10, 415), (500, 1170)),
    "normal": ((5, 210), (260, 670), (10, 400), (500, 1000)),
    "high": ((3, 50), (67, 235), (5, 100), (125, 335)),
    "urgent": ((1, 8), (11, 40), (2, 25), (32, 100)),
}
LATE_SHARE = {"low": 0.12, "normal": 0.08, "high": 0.1, "urgent": 0.12}
INCIDENT_LATE_SHARE = 0.4  # a swamped team during an outage


def opening_fields(rng: Random, number: int, incident: bool) -> dict[str, FieldValue]:
    org = rng.randrange(len(ORGANIZATIONS) + 4)  # the last few: people with no organization
    organization = ORGANIZATIONS[org] if org < len(ORGANIZATIONS) else ""
    tags = set()
    if incident:
        queue, kind, subject = "technical", "incident", rng.choice(OUTAGE_SUBJECTS)
        priority = rng.choices(PRIORITIES, (0, 30, 45, 25))[0]
        tags.add("outage")
    else:
        queue = rng.choices(QUEUES, (25, 40, 20, 15))[0]
        kind, subject = rng.choices(TYPES, (55, 20, 10, 15))[0], rng.choice(SUBJECTS[queue])
        priority = rng.choices(PRIORITIES, (12, 58, 20, 10))[0]
        if queue == "billing" and rng.random() < 0.3:
            tags.add("refund")
        if kind == "problem" and queue == "technical" and rng.random() < 0.4:
            tags.add("bug")
        if rng.random() < 0.02:
            tags.add("no-sla")  # a partner's ticket, handled outside any agreement
    if organization in VIP:
        tags.add("vip")
        priority = "high" if priority == "normal" and rng.random() < 0.4 else priority
    return {
        "status": "new",
        "priority": priority,
        "queue": queue,
        "channel": rng.choices(CHANNELS, (45, 25, 15, 10, 5))[0],
        "type": kind,
        "tags": frozenset(tags),
        "organization": organization,
        "requester": f"customer{org * 40 + rng.randrange(40)}@example.com",
        "subject": subject,
        "url": URL.format(number),
    }


def work_after(start: int, seconds: float, around_the_clock: bool = False) -> int:
    """When ``seconds`` of the team's working time (or any time, for on-call agents) have
    passed after ``start``."""
    if around_the_clock:
        return start + round(seconds)
    left = float(seconds)
    day = dt.datetime.fromtimestamp(start, BERLIN).date()
    while True:
        hours = STAFF_HOURS.get(day.weekday())
        if hours is not None:
            opens, closes = (dt.datetime.combine(day, t, BERLIN).timestamp() for t in hours)
            begin = max(float(start), opens)
            if begin < closes:
                if begin + left <= closes:
                    return round(begin + left)
                left -= closes - begin
        day += dt.timedelta(days=1)


def customer_after(start: int, rng: Random) -> int:
    """When a customer writes back: minutes to days later, seldom at night."""
    low, high = rng.choices(
        ((3 * MINUTE, 2 * HOUR), (2 * HOUR, 12 * HOUR), (12 * HOUR, 2 * DAY)), (50, 35, 15)
    )[0]
    at = start + round(rng.uniform(low, high))
    local = dt.datetime.fromtimestamp(at, BERLIN)
    if local.hour >= 23 or local.hour < 7:
        day = local.date() + dt.timedelta(days=1 if local.hour >= 23 else 0)
        morning = dt.datetime.combine(day, dt.time(7), BERLIN).timestamp()
        at = round(morning + rng.uniform(0, 3 * HOUR))
    return at
