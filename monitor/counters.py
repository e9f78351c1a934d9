"""Counters and histograms kept in the database, so they survive restarts and every
process serving /metrics reports the same values. Increments are gathered while a
transaction does its work and written at its end with one upsert per series."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping

from sqlalchemy.dialects import postgresql, sqlite

from monitor.models import Counter, DbSession

# Business seconds (CONTRACT.md): 1m 5m 15m 30m 1h 2h 4h 8h 1d 2d 5d 10d
BUSINESS_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 432000, 864000)
POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def label_key(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


class Tally:
    """Increments for one transaction."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], float] = defaultdict(float)

    def add(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        self.pending[(name, label_key(labels))] += amount

    def observe(
        self, name: str, labels: Mapping[str, str], value: float, buckets: Iterable[float]
    ) -> None:
        """A histogram observation, stored as cumulative ``le`` buckets, sum and count."""
        for bound in buckets:
            if value <= bound:
                self.add(f"{name}_bucket", {**labels, "le": _le(bound)})
        self.add(f"{name}_bucket", {**labels, "le": "+Inf"})
        self.add(f"{name}_sum", labels, value)
        self.add(f"{name}_count", labels)

    def flush(self, session: DbSession) -> None:
        if not self.pending:
            return
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        rows = [{"name": n, "labels": k, "value": v} for (n, k), v in sorted(self.pending.items())]
        stmt = insert(Counter)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Counter.name, Counter.labels],
            set_={"value": Counter.value + stmt.excluded.value},
        )
        session.execute(stmt, rows)
        self.pending.clear()


def _le(bound: float) -> str:
    return str(float(bound))


def read(session: DbSession, prefix: str = "") -> list[tuple[str, dict[str, str], float]]:
    query = session.query(Counter)
    if prefix:
        query = query.filter(Counter.name.startswith(prefix))
    return [(c.name, json.loads(c.labels), c.value) for c in query.all()]
