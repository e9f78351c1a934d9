"""The Freshdesk connector's cursor: one watermark per list it reads (tickets, deleted,
spam, ratings), with the ids delivered from the overlap a sync reads again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from connectors.base import Cursor, FatalError
from connectors.freshdesk_history import instant, iso

OVERLAP = dt.timedelta(seconds=60)  # each sync reads again from this long before the mark


class Window:
    """How far one list has been read: every change before ``since`` is delivered, and
    ``seen`` names what was delivered from the overlap (``"<id>@<unix updated_at>"``)."""

    def __init__(self, since: dt.datetime, seen: set[str] | None = None) -> None:
        self.since = since
        self.seen = seen or set()
        self.taken: set[str] = set()  # delivered in this sync, settled or not

    @classmethod
    def load(cls, raw: Any, start: dt.datetime) -> Window:
        if raw is None:
            return cls(start)
        since = instant(raw.get("since")) if isinstance(raw, dict) else None
        if since is None:
            raise FatalError(f"freshdesk: not a cursor of this connector: {raw!r}")
        return cls(since, {str(key) for key in raw.get("seen", ())})

    def fresh(self, key: str) -> bool:
        return key not in self.seen and key not in self.taken

    def take(self, key: str, at: dt.datetime, settled_before: dt.datetime) -> None:
        self.since = max(self.since, at)
        self.taken.add(key)
        if at <= settled_before:
            self.seen.add(key)

    def dump(self) -> dict[str, Any]:
        floor = (self.since - OVERLAP - dt.timedelta(seconds=1)).timestamp()
        seen = sorted(k for k in self.seen if int(k.rpartition("@")[2]) >= floor)
        return {"since": iso(self.since), "seen": seen}


def key_of(record: Mapping[str, Any], at: dt.datetime) -> str:
    return f"{record.get('id')}@{int(at.timestamp())}"


class State:
    """The cursor: one window per list."""

    LISTS = ("tickets", "deleted", "spam", "ratings")

    def __init__(self, cursor: Cursor | None, start: dt.datetime) -> None:
        if cursor is not None and not isinstance(cursor, dict):
            raise FatalError(f"freshdesk: not a cursor of this connector: {cursor!r}")
        self.windows = {n: Window.load((cursor or {}).get(n), start) for n in self.LISTS}
        self.caught_up: dt.datetime | None = None  # server time the ticket walk ended

    def dump(self) -> Cursor:
        return {"v": 1, **{name: w.dump() for name, w in self.windows.items()}}
