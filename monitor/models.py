"""What slamon stores: connectors and their cursors, tickets, their events, their current
clocks, and the counters behind /metrics. Instants are POSIX timestamps (UTC seconds), so
deadlines compare the same way in SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
DbSession = Session | scoped_session[Any]  # a plain session, or Flask-SQLAlchemy's


class ConnectorState(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "connectors"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(50))
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    up: Mapped[bool] = mapped_column(Boolean, default=False)
    last_success: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    newest_change: Mapped[float | None] = mapped_column(Float, nullable=True)
    notes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class Ticket(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "tickets"
    __table_args__ = (Index("ix_tickets_source", "connector", "source_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connector: Mapped[str] = mapped_column(String(200))
    source_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="new")
    priority: Mapped[str] = mapped_column(String(20), default="normal")
    queue: Mapped[str] = mapped_column(String(200), default="")
    channel: Mapped[str] = mapped_column(String(20), default="other")
    type: Mapped[str] = mapped_column(String(200), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    organization: Mapped[str] = mapped_column(String(200), default="")
    requester: Mapped[str] = mapped_column(String(300), default="")
    subject: Mapped[str] = mapped_column(String(500), default="")
    url: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    removed: Mapped[bool] = mapped_column(Boolean, default=False)
    policy: Mapped[str | None] = mapped_column(String(200), nullable=True)
    solves: Mapped[int] = mapped_column(Integer, default=0)  # counted into solved_total
    ratings: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # counted answers


class EventRow(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_source", "ticket_id", "source_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    source_id: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(20))
    at: Mapped[float] = mapped_column(Float)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ClockRow(db.Model):  # type: ignore[name-defined,misc]
    """A ticket's clock as last evaluated. ``deadline`` and ``at_risk_at`` let /metrics,
    the API and the board tell its state at any later instant without re-evaluating."""

    __tablename__ = "clocks"
    __table_args__ = (Index("ix_clocks_deadline", "state", "deadline"),)

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(20), primary_key=True)
    cycle: Mapped[int] = mapped_column(Integer, primary_key=True)
    connector: Mapped[str] = mapped_column(String(200))
    queue: Mapped[str] = mapped_column(String(200), default="")
    priority: Mapped[str] = mapped_column(String(20), default="normal")
    policy: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[float] = mapped_column(Float)
    deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    at_risk_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    stopped_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    elapsed: Mapped[float] = mapped_column(Float, default=0.0)
    target: Mapped[int] = mapped_column(Integer, default=0)
    evaluated_at: Mapped[float] = mapped_column(Float)
    breached_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    breach_counted: Mapped[bool] = mapped_column(Boolean, default=False)
    completions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class Counter(db.Model):  # type: ignore[name-defined,misc]
    """A counter series (or a histogram's bucket, sum or count) that survives restarts."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    labels: Mapped[str] = mapped_column(String(1000), primary_key=True)  # canonical JSON
    value: Mapped[float] = mapped_column(Float, default=0.0)
