"""Clocks: a ticket's history, replayed under the policies, as of an instant.

The replay first finds when each clock ran (policy-independent: when it started, when it
stopped or was cancelled, and the status timeline that pauses it), then judges each clock
under the policy in effect: a running clock under the policy of ``now`` (re-targeted from
its original start), a stopped one under the policy it stopped with.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from rules.calendar import Calendar
from rules.events import (
    DONE,
    Created,
    Event,
    FieldChange,
    FieldValue,
    Message,
    Rating,
    Removed,
    timed,
)
from rules.policies import Policy, RuleSet

State = Literal["on_track", "at_risk", "breached", "paused", "achieved", "missed", "cancelled"]
RUNNING_STATES = ("on_track", "at_risk", "breached", "paused")
_INF = math.inf
_UTC = dt.UTC
_NEVER: frozenset[str] = frozenset()


class Completion(NamedTuple):
    """A clock stopping with a result (each solve of a ticket is one for resolution)."""

    at: dt.datetime
    policy: str
    elapsed_seconds: float
    target_seconds: int
    achieved: bool


class Clock(NamedTuple):
    """One clock of a ticket as of an instant (immutable; a named tuple because the engine
    makes hundreds of thousands of them a second).

    ``deadline`` and ``at_risk_at`` are the instants at which a running clock turns
    breached (just after the deadline) and at_risk, so whoever stores them can tell the
    state at any later instant without a new evaluation (:meth:`state_at`).
    ``breached_at`` is when the clock first breached, under whichever target then
    applied; it stays set when a later, larger target puts the clock back on track.
    """

    metric: str
    cycle: int
    policy: str
    state: State
    started_at: dt.datetime
    deadline: dt.datetime | None
    stopped_at: dt.datetime | None
    elapsed_seconds: float
    target_seconds: int
    at_risk_at: dt.datetime | None = None
    breached_at: dt.datetime | None = None
    completions: tuple[Completion, ...] = ()

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    def state_at(self, instant: dt.datetime) -> State:
        """The state at a later instant, given that nothing has happened since."""
        return state_at(self.state, self.deadline, self.at_risk_at, instant)


def state_at(state: State, deadline: Any, at_risk_at: Any, instant: Any) -> State:
    """A clock's state at a later instant from its stored state, deadline and at-risk
    instant (datetimes, or POSIX timestamps as storage keeps them), nothing having
    happened since. Only a running clock turns: at risk, then breached after the deadline."""
    if state not in ("on_track", "at_risk", "breached"):
        return state
    if deadline is not None and instant > deadline:
        return "breached"
    if at_risk_at is not None and instant >= at_risk_at:
        return "at_risk"
    return "on_track"


class Evaluation(NamedTuple):
    """Everything the engine says about one ticket as of an instant."""

    fields: Mapping[str, FieldValue]
    policy: str | None
    clocks: tuple[Clock, ...]
    ratings: Mapping[str, int] = MappingProxyType({})  # survey -> latest score
    created_at: dt.datetime | None = None
    removed: bool = False


@dataclass(slots=True)
class _Run:
    """When one clock ran: from ``start`` until ``end`` (stop or cancel), if it ended."""

    metric: str
    cycle: int
    start: float
    end: float = _INF
    cancelled: bool = False
    stop_policy: Policy | None = None
    solves: list[tuple[float, Policy | None]] | None = None  # resolution's, in order


@dataclass(slots=True)
class _Timeline:
    """Status and policy over time, as parallel lists of change instants and values."""

    status_at: list[float]
    status: list[str]
    policy_at: list[float]
    policy: list[Policy | None]

    def spans(
        self, start: float, end: float, excluded: frozenset[str]
    ) -> list[tuple[float, float]]:
        """The parts of [start, end] during which the status is not in ``excluded``; the
        last span ends at ``end`` exactly when the clock runs at ``end`` (it may be empty,
        for a clock that starts at ``end``)."""
        if not excluded:
            return [(start, end)] if start <= end else []
        out: list[tuple[float, float]] = []
        times, status = self.status_at, self.status
        i = max(0, bisect_right(times, start) - 1)
        t = start
        while t < end:
            nxt = times[i + 1] if i + 1 < len(times) else _INF
            seg_end = min(nxt, end)
            if status[i] not in excluded and t < seg_end:
                if out and out[-1][1] == t:
                    out[-1] = (out[-1][0], seg_end)
                else:
                    out.append((t, seg_end))
            t = max(t, seg_end)
            i += 1
        if (not out or out[-1][1] != end) and start <= end:
            if status[max(0, bisect_right(times, end) - 1)] not in excluded:
                out.append((end, end))
        return out

    def running_at(self, instant: float, excluded: frozenset[str]) -> bool:
        """Whether the status at ``instant`` (after every change at it) lets a clock run."""
        return self.status[max(0, bisect_right(self.status_at, instant) - 1)] not in excluded

    def status_now(self) -> str:
        return self.status[-1]


def evaluate(
    connector: str,
    events: Iterable[Event],
    rules: RuleSet,
    now: dt.datetime,
    previous: Iterable[Clock] = (),
) -> Evaluation:
    """Evaluate a ticket's history as of ``now`` (events after it are ignored).

    ``previous`` are the clocks last stored for the ticket: a stopped clock among them
    keeps its policy and result when the config has changed since (SLA-SEMANTICS.md #24).
    """
    replay = _Replay(connector, rules)
    for t, _, _, event in timed(events, until=now):
        if not replay.apply(event, t):
            break
    if replay.created_at is None:
        return Evaluation(fields={}, policy=None, clocks=())
    at_now = now.timestamp()
    timeline = replay.timeline
    clocks = tuple([c for run in replay.runs() if (c := _judge(run, timeline, at_now))])
    if previous:
        kept = {(c.metric, c.cycle): c for c in previous}
        clocks = tuple(_keep_result(c, kept.get((c.metric, c.cycle))) for c in clocks)
    current = timeline.policy[-1]
    return Evaluation(  # the replay's own dicts: it ends here
        replay.fields,
        current.name if current else None,
        clocks,
        replay.ratings,
        _instant(replay.created_at),
        replay.removed,
    )


class _Replay:
    """Walks the history once and records when each clock ran."""

    def __init__(self, connector: str, rules: RuleSet) -> None:
        self.connector = connector
        self.rules = rules
        self.fields: dict[str, FieldValue] = {}
        self.ratings: dict[str, int] = {}
        self.created_at: float | None = None
        self.removed = False
        self.timeline = _Timeline([], [], [], [])
        self.first_response: _Run | None = None
        self.next_responses: list[_Run] = []
        self.updates: list[_Run] = []
        self.resolution: _Run | None = None
        self.running: list[_Run] = []
        self.answered_publicly = False  # a public customer or agent message was seen
        self.waiting = False  # the customer waits for an answer

    def runs(self) -> list[_Run]:
        out = [self.first_response] if self.first_response else []
        out += self.next_responses + self.updates
        if self.resolution:
            out.append(self.resolution)
        return out

    def apply(self, event: Event, t: float) -> bool:
        """Apply one event (at ``t``); False once the ticket is gone and the rest is moot."""
        kind = type(event)
        if kind is Created:
            if self.created_at is None:
                self._create(event, t)  # type: ignore[arg-type]
            return True
        if self.created_at is None:
            return True  # nothing to measure against yet
        if kind is Message:
            if event.public and event.author != "system":  # type: ignore[union-attr]
                self._message(event.author, t)  # type: ignore[union-attr]
        elif isinstance(event, FieldChange):
            self._change(event, t)
        elif isinstance(event, Rating):
            self.ratings[event.survey] = event.score
        elif isinstance(event, Removed):
            self.removed = True
            self._end_responses(t, cancelled=True)
            if self.timeline.status_now() not in DONE:  # a solved ticket keeps its result
                for run in self.running:
                    run.end, run.cancelled, run.stop_policy = t, True, self.timeline.policy[-1]
            return False
        return True

    def _create(self, event: Created, t: float) -> None:
        self.created_at = t
        self.fields = {"status": "new", "priority": "normal", "tags": frozenset()}
        self.fields.update(event.fields)
        self.timeline.status_at.append(t)
        self.timeline.status.append(str(self.fields["status"]))
        self.timeline.policy_at.append(t)
        self.timeline.policy.append(self.rules.policy_for(self.connector, self.fields))
        self.first_response = self._start(_Run("first_response", 0, t))
        self.resolution = self._start(_Run("resolution", 0, t, solves=[]))
        self.waiting = True

    def _message(self, author: str, t: float) -> None:
        first_public = not self.answered_publicly
        self.answered_publicly = True
        if author == "customer":
            if not self.waiting:
                run = _Run("next_response", len(self.next_responses), t)
                self.next_responses.append(self._start(run))
                self.waiting = True
            return
        # a public agent message
        fr = self.first_response
        if first_public and fr is not None and fr.end == _INF:
            self.first_response = None  # outbound ticket: nobody was waiting
            self.running.remove(fr)
        self._end_responses(t, cancelled=False)
        self.waiting = False
        if self.timeline.status_now() not in DONE:
            self.updates.append(self._start(_Run("periodic_update", len(self.updates), t)))

    def _change(self, event: FieldChange, t: float) -> None:
        self.fields[event.field] = event.new
        if event.field == "status":
            before, after = self.timeline.status_now(), str(event.new)
            self.timeline.status_at.append(t)
            self.timeline.status.append(after)
            if after in DONE and before not in DONE:
                self._solve(t)
        elif event.field in self.rules.matched_fields:
            policy = self.rules.policy_for(self.connector, self.fields)
            if policy is not self.timeline.policy[-1]:
                self.timeline.policy_at.append(t)
                self.timeline.policy.append(policy)

    def _solve(self, t: float) -> None:
        # Nothing is left to answer or update: response and update clocks end without a
        # result; resolution completes (again, after a reopen).
        self._end_responses(t, cancelled=True)
        assert self.resolution is not None and self.resolution.solves is not None
        self.resolution.solves.append((t, self.timeline.policy[-1]))
        self.waiting = False

    def _start(self, run: _Run) -> _Run:
        self.running.append(run)
        return run

    def _end_responses(self, t: float, cancelled: bool) -> None:
        """End every running clock but resolution."""
        policy = self.timeline.policy[-1]
        still = []
        for run in self.running:
            if run.metric == "resolution":
                still.append(run)
            else:
                run.end, run.cancelled, run.stop_policy = t, cancelled, policy
        self.running = still


def _excluded(metric: str, policy: Policy) -> frozenset[str]:
    return policy.paused_in.get(metric, _NEVER)


class _Measure(NamedTuple):
    elapsed: float
    deadline: float | None
    at_risk_at: float | None


def _measure(
    spans: Sequence[tuple[float, float]],
    open_ended: bool,
    calendar: Calendar,
    target: int,
    risk: float | None,
) -> _Measure:
    """Elapsed business time over ``spans`` and the instants at which it exceeds the
    target (deadline) and reaches the warning threshold. When ``open_ended`` the last
    span goes on past its end (the clock is running now)."""
    if len(spans) == 1:  # most clocks never pause: one span, one calendar look-up
        a, b = spans[0]
        elapsed, due, risky = calendar.span(a, b, target, risk)
        if open_ended:
            return _Measure(elapsed, due, risky)
        # the clock stopped running at b: only what it reached counts
        reached = risky if risk is not None and elapsed >= risk else None
        return _Measure(elapsed, due if elapsed > target else None, reached)
    elapsed = 0.0
    deadline = at_risk_at = None
    last = len(spans) - 1
    for i, part in enumerate(calendar.seconds_in(spans)):
        a = spans[i][0]
        if open_ended and i == last:
            if deadline is None:
                deadline = calendar.add(a, target - elapsed)
            if at_risk_at is None and risk is not None:
                at_risk_at = calendar.reach(a, risk - elapsed)
        else:
            if deadline is None and elapsed + part > target:
                deadline = calendar.add(a, target - elapsed)
            if at_risk_at is None and risk is not None and elapsed + part >= risk:
                at_risk_at = calendar.reach(a, risk - elapsed)
        elapsed += part
    return _Measure(elapsed, deadline, at_risk_at)


def _passed(spans: Sequence[tuple[float, float]], calendar: Calendar, target: int) -> float | None:
    """The deadline, if the elapsed time over ``spans`` exceeds ``target``."""
    elapsed = 0.0
    for (a, _), part in zip(spans, calendar.seconds_in(spans), strict=True):
        if elapsed + part > target:
            return calendar.add(a, target - elapsed)
        elapsed += part
    return None


def _judge(run: _Run, timeline: _Timeline, now: float) -> Clock | None:
    if run.metric == "resolution":
        return _judge_resolution(run, timeline, now)
    end = min(run.end, now)
    stopped = run.end <= now
    policy = run.stop_policy if stopped else timeline.policy[-1]
    if policy is None or run.metric not in policy.targets or (stopped and run.cancelled):
        if not _ever_targeted(run, timeline, end):
            return None  # no policy ever gave this clock a target: there is no clock
        if not stopped:  # cancelled when the last change took its target away
            end = max(run.start, timeline.policy_at[-1])
        return _cancelled(run, policy, end, _first_breach(run, timeline, end, True))
    target = policy.targets[run.metric]
    excluded = policy.paused_in.get(run.metric, _NEVER)
    if excluded:
        spans = timeline.spans(run.start, end, excluded)
        # ran until it stopped, or runs now (a pause that starts at this instant stops it)
        open_ended = bool(spans) and spans[-1][1] == end
        open_ended = open_ended and (stopped or timeline.running_at(end, excluded))
    else:  # response clocks never pause
        spans, open_ended = [(run.start, end)], True
    running_now = open_ended and not stopped
    risk = policy.warning.threshold(target) if running_now else None
    m = _measure(spans, open_ended, policy.calendar, target, risk)
    if len(timeline.policy_at) == 1:  # one policy all along: the deadline says it all
        passed = m.deadline is not None and m.deadline < end
        breached_at = _instant(m.deadline) if passed else None  # type: ignore[arg-type]
    else:
        breached_at = _first_breach(run, timeline, end, stopped, (policy, m.deadline), policy)
    completions: tuple[Completion, ...] = ()
    if stopped:
        achieved = m.elapsed <= target
        state: State = "achieved" if achieved else "missed"
        completions = (Completion(_instant(end), policy.name, m.elapsed, target, achieved),)
        deadline = m.deadline
    else:
        state, deadline = _running_state(m, running_now, now)
    return Clock(  # positional: this is the hot path
        run.metric,
        run.cycle,
        policy.name,
        state,
        _instant(run.start),
        None if deadline is None else _instant(deadline),
        _instant(end) if stopped else None,
        m.elapsed,
        target,
        None if m.at_risk_at is None else _instant(m.at_risk_at),
        breached_at,
        completions,
    )


def _judge_resolution(run: _Run, timeline: _Timeline, now: float) -> Clock | None:
    """Resolution is one clock that completes at each solve and resumes on reopen."""
    assert run.solves is not None
    solved = timeline.status_now() in DONE and not run.cancelled
    until = min(run.end, now)
    if solved:  # stopped: judged as it stopped at the last solve
        until, current = run.solves[-1]
    else:
        current = run.stop_policy if run.end <= now else timeline.policy[-1]
    completions = _completions(run, timeline, current, until)
    last = completions[-1] if completions else None
    if (
        run.cancelled
        or current is None
        or "resolution" not in current.targets
        or (solved and (last is None or last.at != _instant(until)))
    ):
        if not _ever_targeted(run, timeline, until):
            return None
        if not solved and run.end > now:  # cancelled when the last change took its target away
            until = max(run.start, timeline.policy_at[-1])
        breached_at = _first_breach(run, timeline, until, True)
        clock = _cancelled(run, current, until, breached_at)
        return clock._replace(completions=completions)
    target = current.targets["resolution"]
    spans = timeline.spans(run.start, until, _excluded("resolution", current))
    open_ended = bool(spans) and spans[-1][1] == until
    open_ended = open_ended and (
        solved or timeline.running_at(until, current.paused_in["resolution"])
    )
    running_now = open_ended and not solved
    risk = current.warning.threshold(target) if running_now else None
    m = _measure(spans, open_ended, current.calendar, target, risk)
    if len(timeline.policy_at) == 1:  # one policy all along: the deadline says it all
        passed = m.deadline is not None and m.deadline < until
        breached_at = _instant(m.deadline) if passed else None  # type: ignore[arg-type]
    else:
        breached_at = _first_breach(run, timeline, until, solved, (current, m.deadline), current)
    stopped_at: dt.datetime | None = None
    if solved and last is not None:
        state: State = "achieved" if last.achieved else "missed"
        deadline, stopped_at = m.deadline, last.at
    else:
        state, deadline = _running_state(m, running_now, now)
    return Clock(  # positional: this is the hot path
        "resolution",
        0,
        current.name,
        state,
        _instant(run.start),
        _maybe_instant(deadline),
        stopped_at,
        m.elapsed,
        target,
        _maybe_instant(m.at_risk_at),
        breached_at,
        completions,
    )


def _completions(
    run: _Run, timeline: _Timeline, current: Policy | None, until: float
) -> tuple[Completion, ...]:
    """Each solve judged under the policy it happened under. Solves under one policy share
    one walk over the spans: a solve ends a span, so its elapsed time is a prefix sum."""
    assert run.solves is not None
    if not run.solves:
        return ()
    walks: dict[int, tuple[list[tuple[float, float]], list[float]]] = {}  # spans, totals
    last_solve = {id(policy): at for at, policy in run.solves}
    out = []
    for at, policy in run.solves:
        if policy is None or "resolution" not in policy.targets:
            continue
        walk = walks.get(id(policy))
        if walk is None:
            spans = timeline.spans(
                run.start, last_solve[id(policy)], policy.paused_in["resolution"]
            )
            walk = walks[id(policy)] = (spans, list(accumulate(policy.calendar.seconds_in(spans))))
        spans, totals = walk
        k = bisect_right(spans, (at, _INF))  # the spans that start at or before the solve
        elapsed = totals[k - 1] if k else 0.0
        if k and spans[k - 1][1] > at:  # solved and reopened within the same second
            elapsed -= policy.calendar.seconds_between(at, spans[k - 1][1])
        target = policy.targets["resolution"]
        out.append(Completion(_instant(at), policy.name, elapsed, target, elapsed <= target))
    return tuple(out)


def _running_state(m: _Measure, running_now: bool, now: float) -> tuple[State, float | None]:
    if not running_now:  # paused: breached if the deadline passed while it ran
        return ("breached", m.deadline) if m.deadline is not None else ("paused", None)
    assert m.deadline is not None and m.at_risk_at is not None
    if now > m.deadline:
        return "breached", m.deadline
    if now >= m.at_risk_at:
        return "at_risk", m.deadline
    return "on_track", m.deadline


def _first_breach(
    run: _Run,
    timeline: _Timeline,
    end: float,
    stopped: bool,
    known: tuple[Policy, float | None] | None = None,
    stop_policy: Policy | None = None,
) -> dt.datetime | None:
    """When the clock first ran past the target of the policy then in effect.

    ``known`` is a policy with the deadline already measured for it over [start, end).
    A policy replaced within the same second never applied. A clock that stopped at
    ``end`` is judged at that instant under ``stop_policy`` alone: the changes at the same
    second that came after the stop in the helpdesk's order do not reach it."""
    times, policies = timeline.policy_at, timeline.policy
    if known is not None and len(times) == 1 and policies[0] is known[0]:  # the usual case
        deadline = known[1]
        return _instant(deadline) if deadline is not None and deadline < end else None
    i = max(0, bisect_right(times, run.start) - 1)
    while i < len(times) and times[i] <= end:
        policy = policies[i]
        seg_from = times[i]
        seg_to = times[i + 1] if i + 1 < len(times) else _INF
        i += 1
        stopped_under = stopped and seg_from == end and policy is stop_policy
        if seg_to == seg_from and not stopped_under:
            continue  # replaced within the same second: it never applied
        if stopped and seg_from == end and not stopped_under:
            continue  # changed at the stop instant, after the stop
        if policy is None or run.metric not in policy.targets:
            continue
        limit = min(seg_to, end)
        if known is not None and policy is known[0]:
            deadline = known[1]
        elif limit - run.start <= policy.targets[run.metric]:
            continue  # business time never outruns wall time: no breach can fit in here
        else:  # where, before the segment ends, the elapsed time first exceeds its target
            spans = timeline.spans(run.start, limit, _excluded(run.metric, policy))
            deadline = _passed(spans, policy.calendar, policy.targets[run.metric])
        if deadline is not None and deadline < limit:
            return _instant(max(deadline, seg_from))
    return None


def _ever_targeted(run: _Run, timeline: _Timeline, end: float) -> bool:
    times, policies = timeline.policy_at, timeline.policy
    i = max(0, bisect_right(times, run.start) - 1)
    for policy in policies[i : bisect_right(times, end)]:
        if policy is not None and run.metric in policy.targets:
            return True
    return False


def _cancelled(
    run: _Run, policy: Policy | None, end: float, breached_at: dt.datetime | None
) -> Clock:
    target = policy.targets.get(run.metric, 0) if policy else 0
    return Clock(
        metric=run.metric,
        cycle=run.cycle,
        policy=policy.name if policy else "",
        state="cancelled",
        started_at=_instant(run.start),
        deadline=None,
        stopped_at=_instant(end),
        elapsed_seconds=0.0,
        target_seconds=target,
        breached_at=breached_at,
    )


def _keep_result(clock: Clock, previous: Clock | None) -> Clock:
    """A stopped clock keeps the result it was stored with (the config may have changed)."""
    if previous is None or previous.started_at != clock.started_at:
        return clock
    if clock.metric == "resolution":
        before = {c.at: c for c in previous.completions}
        completions = tuple(before.get(c.at, c) for c in clock.completions)
        if clock.state in ("achieved", "missed") and completions:
            last = completions[-1]
            return clock._replace(
                completions=completions,
                state="achieved" if last.achieved else "missed",
                policy=last.policy,
                target_seconds=last.target_seconds,
                elapsed_seconds=last.elapsed_seconds,
                deadline=previous.deadline
                if previous.stopped_at == clock.stopped_at
                else clock.deadline,
            )
        return clock._replace(completions=completions)
    if clock.state in ("achieved", "missed") and previous.stopped_at == clock.stopped_at:
        if previous.state in ("achieved", "missed"):
            return previous
    return clock


_MADE: dict[float, dt.datetime] = {}


def _instant(t: float) -> dt.datetime:
    # Clocks of one ticket share instants (one clock stops where the next starts): make
    # each once. Any entry is right for any caller, so threads may share and clear it.
    made = _MADE.get(t)
    if made is None:
        if len(_MADE) > 4096:
            _MADE.clear()
        made = _MADE[t] = dt.datetime.fromtimestamp(t, _UTC)
    return made


def _maybe_instant(t: float | None) -> dt.datetime | None:
    return None if t is None else _instant(t)
