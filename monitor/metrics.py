"""/metrics: one custom collector that builds every family at scrape time from what is
stored. Running clocks' states come from their stored deadlines, so a deadline that passed
a moment ago shows at once, with no evaluation in between.

The SLA counters (breaches, completions by result) are exported at 0 for every label set
that has a running clock or has counted before, so each series exists before its first
count: Prometheus' increase() cannot see a series that is born at 1."""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, select

from monitor.counters import BUSINESS_BUCKETS, POLL_BUCKETS, read
from monitor.models import ClockRow, ConnectorState, DbSession, Ticket

TICKET = ("connector", "queue", "priority")
SLA = (*TICKET, "policy", "metric")
RUNNING = ("on_track", "at_risk", "breached", "paused")
BREACHES = "helpdesk_sla_breaches_total"
COMPLETED = "helpdesk_sla_completed_total"
RESULTS = ("achieved", "missed")
Stored = list[tuple[str, dict[str, str], float]]
HISTOGRAMS = {
    "helpdesk_response_seconds": (
        "Business seconds to first/next response, observed when the response happens.",
        (*TICKET, "policy", "metric"),
        BUSINESS_BUCKETS,
    ),
    "helpdesk_resolution_seconds": (
        "Business seconds to resolution, observed at solve.",
        (*TICKET, "policy"),
        BUSINESS_BUCKETS,
    ),
    "slamon_connector_poll_duration_seconds": (
        "How long a connector's poll took.",
        ("connector",),
        POLL_BUCKETS,
    ),
}
COUNTERS = {
    "helpdesk_tickets_created_total": ("Tickets first seen, by creation.", (*TICKET, "channel")),
    "helpdesk_tickets_solved_total": ("Transitions into solved.", TICKET),
    COMPLETED: (
        "Stopped clocks by result (achieved or missed).",
        (*SLA, "result"),
    ),
    "helpdesk_satisfaction_responses_total": (
        "Survey answers by survey and score.",
        (*TICKET, "survey", "score"),
    ),
    "slamon_connector_polls_total": ("Connector polls by result.", ("connector", "result")),
    "slamon_connector_changes_total": ("Ticket changes ingested.", ("connector",)),
}


class StoredMetrics(Collector):
    """Reads the database on every scrape (through ``session_factory``)."""

    def __init__(
        self,
        session_factory: Callable[[], Any],
        version: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.session_factory = session_factory
        self.version = version
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        with self.session_factory() as session:
            stored = read(session)
            series = _sla_series(session, stored)
            yield from _tickets(session, now)
            yield from _clocks(session, now, stored, series)
            yield from _counters(stored, series)
            yield from _connectors(session, now)
        info = GaugeMetricFamily(
            "slamon_build_info", "slamon's version; always 1.", labels=["version"]
        )
        info.add_metric([self.version], 1)
        yield info


def _tickets(session: DbSession, now: float) -> Iterator[Metric]:
    open_ = GaugeMetricFamily(
        "helpdesk_tickets_open", "Tickets not solved or closed.", labels=TICKET
    )
    oldest = GaugeMetricFamily(
        "helpdesk_oldest_open_ticket_age_seconds", "Age of the oldest open ticket.", labels=TICKET
    )
    rows = session.execute(
        select(
            Ticket.connector,
            Ticket.queue,
            Ticket.priority,
            func.count(),
            func.min(Ticket.created_at),
        )
        .where(Ticket.removed.is_(False), Ticket.status.not_in(("solved", "closed")))
        .group_by(Ticket.connector, Ticket.queue, Ticket.priority)
    )
    for connector, queue, priority, count, first in rows:
        open_.add_metric([connector, queue, priority], count)
        oldest.add_metric([connector, queue, priority], max(0.0, now - first))
    yield open_
    yield oldest


def _sla_series(session: DbSession, stored: Stored) -> set[tuple[str, ...]]:
    """The SLA label sets whose counters are exported even at 0: those of running clocks
    and those counted before (so a series does not vanish when its clocks stop). Bounded
    like every label set here: connector, queue, priority, policy, metric."""
    group = (ClockRow.connector, ClockRow.queue, ClockRow.priority, ClockRow.policy,
             ClockRow.metric)  # fmt: skip
    running = select(*group).where(ClockRow.state.in_(RUNNING)).distinct()
    series = {tuple(row) for row in session.execute(running)}
    for name, labels, _ in stored:
        if name in (BREACHES, COMPLETED):
            series.add(tuple(labels.get(k, "") for k in SLA))
    return series


def _clocks(
    session: DbSession, now: float, stored: Stored, series: set[tuple[str, ...]]
) -> Iterator[Metric]:
    state = case(
        (ClockRow.state == "paused", "paused"),
        (and_(ClockRow.deadline.is_not(None), ClockRow.deadline < now), "breached"),
        (and_(ClockRow.at_risk_at.is_not(None), ClockRow.at_risk_at <= now), "at_risk"),
        else_="on_track",
    )
    group = (
        ClockRow.connector,
        ClockRow.queue,
        ClockRow.priority,
        ClockRow.policy,
        ClockRow.metric,
    )
    clocks = GaugeMetricFamily(
        "helpdesk_sla_clocks", "Running clocks by state.", labels=[*SLA, "state"]
    )
    running = ClockRow.state.in_(RUNNING)
    for *labels, st, count in session.execute(
        select(*group, state, func.count()).where(running).group_by(*group, state)
    ):
        clocks.add_metric([*labels, st], count)
    yield clocks

    nearest = GaugeMetricFamily(
        "helpdesk_sla_next_deadline_seconds",
        "Seconds until the nearest deadline of a running, unbreached clock.",
        labels=SLA,
    )
    for *names, deadline in session.execute(
        select(*group, func.min(ClockRow.deadline))
        .where(ClockRow.state.in_(("on_track", "at_risk")), ClockRow.deadline >= now)
        .group_by(*group)
    ):
        assert deadline is not None  # the filter only keeps clocks with one
        nearest.add_metric(names, deadline - now)
    yield nearest

    breaches = CounterMetricFamily(
        "helpdesk_sla_breaches",
        "Clocks that passed their deadline, counted once, at the moment of breach.",
        labels=SLA,
    )
    totals = dict.fromkeys(series, 0.0)
    for name, values, amount in stored:
        if name == BREACHES:
            key = tuple(values.get(k, "") for k in SLA)
            totals[key] = totals.get(key, 0.0) + amount
    due = select(*group, func.count()).where(
        ClockRow.state.in_(("on_track", "at_risk", "breached")),
        ClockRow.breach_counted.is_(False),
        ClockRow.deadline < now,
    )
    for *passed, count in session.execute(due.group_by(*group)):  # since the last tick
        totals[tuple(passed)] = totals.get(tuple(passed), 0.0) + count
    for key, amount in sorted(totals.items()):
        breaches.add_metric(list(key), amount)
    yield breaches


def _counters(stored: Stored, zeroed: set[tuple[str, ...]]) -> Iterator[Metric]:
    for name, (doc, labels) in COUNTERS.items():
        counter = CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)
        totals: dict[tuple[str, ...], float] = {}
        if name == COMPLETED:
            totals = {(*key, result): 0.0 for key in zeroed for result in RESULTS}
        for row_name, values, value in stored:
            if row_name == name:
                key = tuple(values.get(k, "") for k in labels)
                totals[key] = totals.get(key, 0.0) + value
        for key, value in sorted(totals.items()):
            counter.add_metric(list(key), value)
        yield counter
    for name, (doc, labels, buckets) in HISTOGRAMS.items():
        series: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
        for row_name, values, value in stored:
            if row_name.startswith(name + "_"):
                key = tuple(values.get(k, "") for k in labels)
                part = row_name.removeprefix(name + "_")
                series[key][values["le"] if part == "bucket" else part] = value
        histogram = HistogramMetricFamily(name, doc, labels=labels)
        bounds = [str(float(b)) for b in buckets] + ["+Inf"]
        for key, parts in sorted(series.items()):
            cumulative = [(b, parts.get(b, 0.0)) for b in bounds]
            histogram.add_metric(list(key), cumulative, sum_value=parts.get("sum", 0.0))
        yield histogram


def _connectors(session: DbSession, now: float) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "slamon_connector_up", "1 if the connector's last poll succeeded.", labels=["connector"]
    )
    success = GaugeMetricFamily(
        "slamon_connector_last_success_timestamp_seconds",
        "When the connector last polled successfully (Unix time).",
        labels=["connector"],
    )
    lag = GaugeMetricFamily(
        "slamon_connector_lag_seconds",
        "Now minus the newest change the connector has seen complete.",
        labels=["connector"],
    )
    for state in session.scalars(select(ConnectorState).order_by(ConnectorState.name)):
        up.add_metric([state.name], 1 if state.up else 0)
        if state.last_success is not None:
            success.add_metric([state.name], state.last_success)
        if state.newest_change is not None:
            lag.add_metric([state.name], max(0.0, now - state.newest_change))
    yield up
    yield success
    yield lag


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
