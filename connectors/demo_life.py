"""One simulated ticket's whole life, decided the moment it arrives.

Everything about ticket ``k`` — its fields, who writes when, each status change, its
ratings — is drawn from ``random.Random(f"{seed}:{k}")`` and its arrival, so a seed always
tells the same story however the connector is polled. The story is written in time
order by a small script (:class:`_Story`); events that happen on the side (an auto-reply,
a note while the customer waits, a survey answer days later) are placed by time when the
story is finished.

The team it simulates works Berlin office hours; on-call agents answer urgent and high
tickets around the clock. Response times aim at the demo's targets (urgent 10m, high 1h,
standard 4h business hours) and miss them now and then.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from random import Random

from connectors.demo_helpdesk import (
    DAY,
    HOUR,
    INCIDENT_LATE_SHARE,
    LATE_SHARE,
    MINUTE,
    PRIORITIES,
    QUEUES,
    RESPONSE_MINUTES,
    customer_after,
    opening_fields,
    work_after,
)
from rules.events import (
    Author,
    Created,
    Event,
    FieldChange,
    FieldValue,
    Message,
    Rating,
    Removal,
    Removed,
)

MAX_LIFE = 21 * DAY  # nothing happens to a ticket later than this after it arrived

_Make = Callable[..., Event]  # an event class with its own arguments bound: (id, at, seq)


@dataclass(frozen=True)
class Ticket:
    """A simulated ticket: its events in the helpdesk's order and when each happened."""

    id: str
    created_at: int  # POSIX seconds
    opening: Mapping[str, FieldValue]
    events: tuple[Event, ...]
    times: tuple[int, ...]  # POSIX seconds of each event, ascending

    @property
    def last(self) -> int:
        return self.times[-1]

    def touched(self, since: int, until: int) -> bool:
        """Whether anything happened in (since, until]."""
        i = bisect_right(self.times, since)
        return i < len(self.times) and self.times[i] <= until

    def times_in(self, since: int, until: int) -> tuple[int, ...]:
        return self.times[bisect_right(self.times, since) : bisect_right(self.times, until)]

    def between(self, since: int, until: int) -> tuple[Event, ...]:
        return self.events[bisect_right(self.times, since) : bisect_right(self.times, until)]

    def fields_at(self, until: int) -> dict[str, FieldValue]:
        fields = dict(self.opening)
        for event in self.events[: bisect_right(self.times, until)]:
            if isinstance(event, FieldChange):
                fields[event.field] = event.new
        return fields


def live(seed: int, number: int, at: int, incident: bool, lead: bool) -> Ticket:
    """Ticket ``number``'s whole life; ``incident``: it arrived during an outage, ``lead``:
    as its first report (urgent, and answered too late: the demo's first breach)."""
    rng = Random(f"{seed}:{number}")
    story = _Story(number, at, rng, opening_fields(rng, number, incident or lead))
    if lead:
        story.lead()
    elif not incident and rng.random() < 0.05:
        story.outbound()
    else:
        story.inbound(incident)
    return story.finish()


class _Story:
    """Writes one ticket's events in time order; ``t`` is the story's present."""

    def __init__(self, number: int, at: int, rng: Random, fields: dict[str, FieldValue]) -> None:
        self.id = str(number)
        self.rng = rng
        self.start = self.t = at
        self.fields = fields  # as of ``t``
        self.opening = dict(fields)
        self.plan: list[tuple[int, int, _Make | tuple[str, FieldValue]]] = []
        self.late = False  # some answer came later than the team aims for

    # -- writing events ------------------------------------------------------------

    def _add(self, step: _Make | tuple[str, FieldValue], at: int | None) -> None:
        self.plan.append((self.t if at is None else at, len(self.plan), step))

    def created(self, by: Author) -> None:
        self.opening = dict(self.fields)
        self._add(partial(Created, fields=self.opening, by=by), None)
        self.message(by)

    def message(self, author: Author, public: bool = True, at: int | None = None) -> None:
        self._add(partial(Message, author=author, public=public), at)

    def note(self, at: int | None = None) -> None:
        self.message("agent", public=False, at=at)

    def set(self, field: str, value: FieldValue, at: int | None = None) -> None:
        self.fields[field] = value
        self._add((field, value), at)

    def tag(self, tag: str) -> None:
        tags = self.fields["tags"]
        assert isinstance(tags, frozenset)
        self.set("tags", tags | {tag})

    def rating(self, survey: str, score: int, at: int) -> None:
        self._add(partial(Rating, survey=survey, score=score), at)

    def finish(self) -> Ticket:
        fields = dict(self.opening)
        events: list[Event] = []
        times: list[int] = []
        for at, _, step in sorted(self.plan):
            if at > self.start + MAX_LIFE:
                break
            n, when = len(events), dt.datetime.fromtimestamp(at, dt.UTC)
            if isinstance(step, tuple):
                name, value = step
                if fields.get(name) == value:
                    continue
                events.append(FieldChange(f"{self.id}-{n}", when, name, value, fields.get(name), n))
                fields[name] = value
            else:
                events.append(step(id=f"{self.id}-{n}", at=when, seq=n))
            times.append(at)
        return Ticket(self.id, self.start, self.opening, tuple(events), tuple(times))

    # -- the script ----------------------------------------------------------------

    def inbound(self, incident: bool) -> None:
        rng = self.rng
        self.created("customer")
        if self.fields["channel"] in ("email", "web") and rng.random() < 0.7:
            self.message("system", at=self.t + rng.randint(2, 60))  # "we got your request"
        if rng.random() < (0.12 if incident else 0.035):
            return self.discard("merged" if incident else None)
        self.first_answer(INCIDENT_LATE_SHARE if incident else None)
        self.conversation()

    def lead(self) -> None:
        """An outage's first report: urgent, and the on-call agent is slow to answer."""
        self.fields.update(priority="urgent", channel="phone")
        self.created("customer")
        answer = self.t + self.rng.randint(14 * MINUTE, 35 * MINUTE)
        self.note(at=self.rng.randint(self.t + 60, answer - 60))
        self.t, self.late = answer, True
        self.message("agent")
        self.conversation()

    def outbound(self) -> None:
        """An agent writes first (a renewal, a follow-up call): no first response is due."""
        self.fields.update(status="pending", channel="email", type="task")
        self.created("agent")
        if self.rng.random() < 0.3:
            return self.gone_quiet()
        self.t = customer_after(self.t, self.rng)
        self.message("customer")
        self.set("status", "open")
        self.answer()
        self.conversation()

    def discard(self, reason: Removal | None) -> None:
        reasons: tuple[Removal, ...] = ("spam", "deleted", "merged")
        reason = reason or self.rng.choices(reasons, (55, 20, 25))[0]
        self.t = work_after(self.t, self.rng.uniform(2 * MINUTE, 2 * HOUR))
        if reason == "merged":
            self.note()
        self._add(partial(Removed, reason=reason), None)

    def first_answer(self, late_share: float | None) -> None:
        rng, start = self.rng, self.t
        answer = self.answer_at(first=True, late_share=late_share)

        def during() -> int:  # a moment while the customer waits for the answer
            return rng.randint(start + 1, max(start + 1, answer - 1))

        if rng.random() < 0.3:
            self.note(at=during())
        if rng.random() < 0.25:
            self.set("status", "open", at=during())  # an agent picked it up
        if rng.random() < 0.07:
            at = during()
            self.note(at=at)
            self.set("queue", rng.choice([q for q in QUEUES if q != self.fields["queue"]]), at)
        if rng.random() < 0.08:
            self.reprioritise(during())
        if rng.random() < 0.12 and answer - start > 20 * MINUTE:
            for at in sorted(during() for _ in range(rng.randint(1, 3))):
                self.message("customer", at=at)  # "any news?"
        self.t = answer
        self.message("agent")

    def conversation(self) -> None:
        """From an agent's public answer on: rounds until solved, then the aftermath."""
        rng, reopened = self.rng, False
        for round_ in range(6):
            step = rng.choices(("solve", "pending", "open", "hold"), (35, 42, 13, 10))[0]
            if round_ == 5 or step == "solve":
                self.set("status", "solved")
                if reopened or round_ == 5 or rng.random() >= 0.1:
                    break
                reopened = True
                self.t = customer_after(self.t, rng)  # "it's broken again"
                self.message("customer")
                self.set("status", "open")
            elif step == "pending":
                self.set("status", "pending")
                if rng.random() < 0.2:
                    return self.gone_quiet()
                self.t = customer_after(self.t, rng)
                self.message("customer")
                self.set("status", "open")
                for _ in range(rng.choices((0, 1, 2), (80, 14, 6))[0]):
                    self.t += rng.randint(2 * MINUTE, 40 * MINUTE)
                    self.message("customer")
            elif step == "hold":
                self.hold()
                continue
            else:  # the agent digs into it and writes back when there is news
                self.set("status", "open")
                hours = (0.3, 3.5) if self.on_call else (1, 12)
                self.t = work_after(self.t, rng.uniform(*hours) * HOUR, self.on_call)
                self.message("agent")
                continue
            if rng.random() < 0.05:
                self.reprioritise(self.t)
            if rng.random() < 0.2:
                self.note(at=self.t + 30)
            self.answer()
        self.aftermath()

    def answer_at(self, first: bool, late_share: float | None = None) -> int:
        priority = str(self.fields["priority"])
        share = LATE_SHARE[priority] if late_share is None else late_share
        late = self.rng.random() < share
        minutes = RESPONSE_MINUTES[priority][(0 if first else 2) + late]
        low, high = minutes[0] * MINUTE, minutes[1] * MINUTE
        seconds = self.rng.uniform(low, high) if late else self.rng.triangular(low, high, low)
        if first and not late and self.fields["channel"] in ("chat", "phone"):
            seconds = self.rng.uniform(20, 240)
        self.late |= late
        return work_after(self.t, seconds, self.on_call)

    @property
    def on_call(self) -> bool:  # answered around the clock
        return self.fields["priority"] in ("high", "urgent")

    def answer(self) -> None:
        self.t = max(self.t + 60, self.answer_at(first=False))
        self.message("agent")

    def hold(self) -> None:
        """Waiting on a third party (engineering, a carrier): an internal note, on_hold,
        and an update to the customer once it is back."""
        self.note()
        self.set("status", "on_hold")
        if self.fields["queue"] == "technical":
            self.tag("bug")
        self.t = work_after(self.t, self.rng.uniform(HOUR, 14 * HOUR))
        self.set("status", "open")
        self.message("agent")

    def reprioritise(self, at: int) -> None:
        rank = PRIORITIES.index(str(self.fields["priority"]))
        rank = min(3, rank + 1) if self.rng.random() < 0.6 else max(0, rank - 1)
        self.set("priority", PRIORITIES[rank], at)

    def gone_quiet(self) -> None:
        """The customer never answers: a reminder after a day, solved two days later."""
        self.t += DAY + self.rng.randint(0, 2 * HOUR)
        self.message("system")
        self.t += 2 * DAY
        self.message("system")
        self.set("status", "solved")
        self.aftermath()

    def aftermath(self) -> None:
        """Closed some days after the solve; now and then a satisfaction survey answer,
        and rarely a changed mind about it."""
        rng, solved = self.rng, self.t
        if rng.random() < 0.75:
            self.set("status", "closed", at=solved + rng.randint(DAY, 4 * DAY))
        if rng.random() >= 0.4:
            return
        at = solved + rng.randint(10 * MINUTE, DAY)
        good = (3, 4, 8, 30, 55) if not self.late else (20, 20, 20, 20, 20)
        csat = rng.choices(range(1, 6), good)[0]
        self.rating("csat", csat, at)
        if rng.random() < 0.35:
            nps = rng.choices(range(11), (1, 1, 1, 2, 2, 4, 5, 10, 20, 25, 29))[0]
            self.rating("nps", nps if not self.late else max(0, nps - 4), at)
        if rng.random() < 0.3:
            self.rating("ces", rng.choices(range(1, 6), good)[0], at)
        if rng.random() < 0.12:
            changed = csat + rng.randint(1, 2) if csat <= 3 else csat - rng.randint(1, 3)
            self.rating("csat", changed, at + rng.randint(HOUR, 3 * DAY))
