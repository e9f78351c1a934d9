"""Help Scout's satisfaction ratings as csat answers (HELPDESK-APIS.md, "PART B — HELP SCOUT
MAILBOX API 2.0", B4 and B7.6).

Help Scout has no documented list of ratings. The Plus/Pro happiness report
(``GET /v2/reports/happiness/ratings?start=&end=&page=``, not HAL: ``results``, ``page``,
``pages``, ``count``) lists rated conversations, but which of its keys holds the rating's
value is unconfirmed (a third party documents ``ratingId`` itself as the value 1/2/3). So a
report row only says *that* something was rated: its ``ratingId`` is read with the confirmed
``GET /v2/ratings/{ratingId}``, and the answer counts only when that rating belongs to the
row's conversation (``conversationId`` = the row's ``id``). Values: ``great`` 5, ``okay`` 3,
``not_good`` 1; ``unknown`` is no answer.

A changed rating (Help Scout lets the customer rate again): the event is stamped at the
rating's ``modifiedAt`` and its id holds that time, so a changed answer is a new event and
the latest counts (SLA-SEMANTICS.md, 23). A row is remembered by its ids and a digest of its
content, so a row that changes while still inside the report window (its value, whatever the
key, or its comment) has its rating read again; a change after the window has moved on is
not seen.

The cursor's ``ratings`` part: ``since`` (the ``end`` of the last complete walk: every row
up to it was delivered), and ``seen`` (the rows delivered from the overlap: key → unix time
of ``ratingCreatedAt``), bounded by the overlap and by :data:`MAX_SEEN`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from connectors.base import Cursor, FatalError, RetriableError
from connectors.helpscout_mapping import instant, iso
from rules.events import Rating

REPORT = "/v2/reports/happiness/ratings"
RATING = "/v2/ratings"
SCORES = {"great": 5, "okay": 3, "not_good": 1}  # "unknown": no answer
NO_ANSWER = "unknown"
# The report is rebuilt from what Help Scout stores; a rating it adds late, or a row that
# changes soon after, is still read within this much of the last walk's end.
OVERLAP = dt.timedelta(hours=1)
MAX_SEEN = 5000  # rows remembered; one forgotten early is read again, not counted twice
RATING_SEQ = 1_000_000  # after every thread of the conversation at the same instant
PLAN_NOTE = "ratings need Help Scout Plus or Pro: not read"


class RatingWindow:
    """The ratings part of the cursor; see the module's docstring."""

    def __init__(self, since: dt.datetime, seen: dict[str, int] | None = None) -> None:
        self.since, self.seen = since, dict(seen or {})

    @classmethod
    def load(cls, cursor: Cursor | None, start: dt.datetime) -> RatingWindow:
        part = (cursor or {}).get("ratings")
        if part is None:  # a first sync, or a cursor from before ratings were read
            return cls(start)
        try:
            seen = {str(k): int(v) for k, v in part.get("seen", {}).items()}
            return cls(instant(part["since"]), seen)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise FatalError(f"helpscout: not a cursor of this connector: {cursor!r}") from None

    def fresh(self, key: str) -> bool:
        return key not in self.seen

    def take(self, key: str, row: Mapping[str, Any], fallback: dt.datetime) -> None:
        try:
            created = instant(row["ratingCreatedAt"])
        except (KeyError, TypeError, ValueError):
            created = fallback
        self.seen[key] = int(created.timestamp())

    def dump(self) -> Cursor:
        floor = (self.since - OVERLAP).timestamp() - 1
        kept = sorted(((t, k) for k, t in self.seen.items() if t >= floor), reverse=True)
        return {"since": iso(self.since), "seen": {k: t for t, k in sorted(kept[:MAX_SEEN])}}


def report_page(body: Any, path: str) -> tuple[list[dict[str, Any]], bool]:
    """A report page's rows and whether another page follows (``page`` below ``pages``)."""
    if not isinstance(body, dict) or not isinstance(body.get("results", []), list):
        raise RetriableError(f"helpscout: {path} answered without a 'results' list")
    page, pages = body.get("page"), body.get("pages")
    if not isinstance(page, int) or not isinstance(pages, int):
        raise RetriableError(f"helpscout: {path} answered without 'page' and 'pages'")
    rows = [row for row in body.get("results") or () if isinstance(row, dict)]
    return rows, page < pages


def row_key(row: Mapping[str, Any]) -> str | None:
    """A report row's key in ``seen``: the rating and conversation ids and a digest of the
    row; None for a row that names no rating of a conversation."""
    rid, cid = row.get("ratingId"), row.get("id")
    if not _whole(rid) or not _whole(cid):
        return None
    digest = hashlib.sha1(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()
    return f"{rid}/{cid}/{digest[:12]}"


def answer(rating: Mapping[str, Any]) -> Rating | None:
    """A rating from ``/v2/ratings/{id}`` as a csat answer, stamped at its last change;
    None for ``unknown``. A value outside the documented ones is a ValueError."""
    value = rating.get("rating")
    if value == NO_ANSWER:
        return None
    if value not in SCORES:
        raise ValueError(value)
    created = instant(rating["createdAt"])
    modified = rating.get("modifiedAt")
    at = max(created, instant(modified)) if modified else created
    eid = f"rating:{int(rating['id'])}:{iso(at)}"
    return Rating(eid, at, "csat", SCORES[str(value)], seq=RATING_SEQ)


def conversation_of(rating: Any) -> int | None:
    value = rating.get("conversationId") if isinstance(rating, dict) else None
    return value if _whole(value) else None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
