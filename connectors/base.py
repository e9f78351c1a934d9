"""The connector interface, the normalized change it yields, and the registry by type."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rules.events import Event, FieldValue

Cursor = dict[str, Any]  # JSON-serialisable; opaque to everyone but its connector
START_BACK = dt.timedelta(days=30)  # how far a first sync reaches back when no start is set


@dataclass(frozen=True)
class TicketChange:
    """What a connector knows about one ticket after a change: its current normalized
    fields and the events it saw (the monitor de-duplicates events by id, so sending an
    event again is harmless).

    ``fields`` holds the normalized ticket fields of CONTRACT.md: ``status``,
    ``priority``, ``queue``, ``channel``, ``type``, ``tags`` (a frozenset),
    ``organization``, ``requester``, ``url`` and ``subject``.
    """

    ticket: str
    fields: Mapping[str, FieldValue]
    events: Sequence[Event] = ()
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(frozen=True)
class Batch:
    """Changes to store together with the cursor that follows them.

    ``newest`` is the time of the newest change the source has completely delivered (for
    the lag metric); ``done`` says the sync has caught up for now."""

    changes: Sequence[TicketChange]
    cursor: Cursor
    newest: dt.datetime | None = None
    done: bool = False
    notes: Sequence[str] = field(default_factory=tuple)  # warnings for the operator


class RetriableError(Exception):
    """A failure worth retrying later (network, 5xx, rate limit, a malformed page)."""

    def __init__(
        self, message: str, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status  # the HTTP status that caused it, if one did


class FatalError(Exception):
    """A failure retrying cannot fix (revoked credentials, a missing permission): the
    connector stops until its config changes. The message never holds a secret."""


class Connector:
    """Base of every connector. Subclasses set ``type`` and implement :meth:`sync`."""

    type: ClassVar[str] = ""
    # keys of the cursor that hold secrets (a rotated token): shown as "***" by the monitor
    cursor_secrets: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.options = options

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        """Yield batches from ``cursor`` (None: a first sync, reaching back to the
        configured start) until caught up; return early once ``stop`` is set."""
        raise NotImplementedError

    def webhook_tickets(self, body: bytes) -> Sequence[str]:
        """The tickets a verified webhook body names, to re-fetch at once with
        :meth:`fetch_tickets`. Empty: the body names none this connector can fetch alone,
        so an early incremental sync runs instead."""
        return ()

    def fetch_tickets(
        self, tickets: Sequence[str], stop: threading.Event
    ) -> Iterator[TicketChange]:
        """The current state and full history of these tickets, one change each (a ticket
        the source no longer has yields a change holding a :class:`~rules.events.Removed`
        event). Only called for ids :meth:`webhook_tickets` returned."""
        raise NotImplementedError

    def wait_for_change(self, stop: threading.Event, timeout: float) -> bool | None:
        """Block until the source pushes word of a change (True: sync now), ``timeout``
        seconds pass or ``stop`` is set (False). None: this source pushes nothing (the
        default), so only polling and webhooks bring changes."""
        return None

    def cursor_secrets_now(self) -> dict[str, str]:
        """The current values of :attr:`cursor_secrets` when they changed outside a sync
        (a token rotated while ``suggest-policies`` ran), for the monitor to store."""
        return {}

    def secrets_in_use(self) -> Iterable[str]:
        """Secrets the connector holds that the config does not name (tokens it was given
        or rotated since), kept out of everything the monitor logs and shows."""
        return ()

    def ticket_url(self, ticket: str) -> str | None:
        """The ticket's page in the helpdesk, for links on the board and in alerts."""
        return None


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(value: Any, what: str) -> dt.datetime:
    """A configured instant (a datetime, date or ISO 8601 text) as an aware datetime
    (UTC when it names no zone); anything else is a FatalError naming ``what``."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise FatalError(f"{what} is not a point in time: {value!r}") from None
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        raise FatalError(f"{what} is not a point in time: {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def start_of(options: Mapping[str, Any], source: str, now: dt.datetime) -> dt.datetime:
    """How far back a first sync reaches: the ``start`` option, else 30 days before ``now``."""
    start = options.get("start")
    return aware(start, f"{source}: start") if start is not None else now - START_BACK


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by name in any case (webhook signatures)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def numeric_id(body: bytes, *paths: str) -> tuple[str, ...]:
    """The first whole-number id found in a JSON webhook body at one of ``paths`` (dotted:
    ``"ticket.id"``), as text; empty when the body is not JSON or names none."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return ()
    for path in paths:
        value: Any = data
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value.strip().isdigit():
            return (str(int(value)),)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return (str(value),)
    return ()


_TYPES: dict[str, type[Connector]] = {}


def register(cls: type[Connector]) -> type[Connector]:
    """Class decorator: make a connector available under its ``type`` name."""
    _TYPES[cls.type] = cls
    return cls


def connector_types() -> Mapping[str, type[Connector]]:
    """Every registered connector type (importing the modules registers them)."""
    from connectors import (  # noqa: F401  (importing them registers them)
        bitrix24,
        demo,
        freshdesk,
        gmail,
        graph,
        helpscout,
        imap,
        jira,
        rt,
        zammad,
        zendesk,
    )

    return dict(_TYPES)


Factory = Callable[[str, Mapping[str, Any]], Connector]
