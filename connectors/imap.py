"""The ``imap`` connector: a support mailbox read over IMAP, headers only
(HELPDESK-APIS.md, "IMAP (incremental poller essentials)"; connectors/mail.py threads the
messages into tickets).

Every watched folder (``folders``, default INBOX; the sent folder, named by ``sent_folder``
or found by its SPECIAL-USE ``\\Sent`` attribute; ``solved_folder``) is opened read-only
(EXAMINE) and read from the cursor's next UID: ``BODY.PEEK[HEADER.FIELDS (...)]`` of the
few headers threading and classification need, INTERNALDATE and FLAGS. Bodies are never
fetched and nothing is ever marked read. Each round takes up to ``per_round`` new messages
of every folder, handles them in date order (a reply in Sent after the question in INBOX)
and becomes one Batch whose cursor moves each folder's next UID just past what it holds.

The cursor keeps, per folder, UIDVALIDITY, the next UID, HIGHESTMODSEQ and the recent UIDs
with their ticket and whether they carry ``solved_keyword``; and the threading state
(:meth:`Threads.dump`). A changed UIDVALIDITY discards the folder's UIDs and reads it again
from ``start``; event ids come from Message-IDs, so messages seen before are recognised and
not counted twice. Flag changes are read with ``UID SEARCH MODSEQ`` (RFC 7162 CONDSTORE)
when the server offers it, else by re-reading the flags of the remembered recent UIDs: the
keyword set solves the message's thread, removed reopens it. A message that arrives in
``solved_folder`` solves its thread.

A message that cannot be used (no header block, no sender, an automatic message that
belongs to no thread, headers that fail to parse) is skipped with a note naming folder,
UID and reason; it never stops the sync.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import imaplib
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient  # type: ignore[import-untyped]
from imapclient.exceptions import IMAPClientError, LoginError  # type: ignore[import-untyped]

from connectors.base import (
    Batch,
    Connector,
    Cursor,
    FatalError,
    RetriableError,
    TicketChange,
    aware,
    register,
    start_of,
    utc_now,
)
from connectors.mail import Agents, Mail, Threads, mail_from_headers, read_headers

HEADERS = (
    "MESSAGE-ID", "IN-REPLY-TO", "REFERENCES", "SUBJECT", "FROM", "SENDER", "TO", "CC",
    "DATE", "AUTO-SUBMITTED", "PRECEDENCE", "X-AUTOREPLY", "X-AUTORESPOND",
    "X-AUTO-RESPONSE-SUPPRESS", "LIST-ID", "LIST-UNSUBSCRIBE",
)  # fmt: skip
SECTION = f"BODY.PEEK[HEADER.FIELDS ({' '.join(HEADERS)})]"
PER_ROUND = 200  # new messages per folder per batch
RECENT_UIDS = 2000  # UIDs per folder whose flags are followed
IDLE_RENEW = 25 * 60.0  # RFC 2177: re-issue IDLE well before the 30-minute logout


@dataclass
class Fetched:
    """One new message as the server gave it."""

    folder: str
    role: str  # "inbox", "sent" or "solved"
    uid: int
    flags: tuple[str, ...]
    received: dt.datetime
    raw: bytes | None  # the header block; None when the server sent none
    mail: Mail | None = None
    problem: str = ""


@register
class ImapConnector(Connector):
    """An IMAP mailbox; see the module's docstring."""

    type = "imap"
    use_condstore = True  # False: follow flags by re-reading them (as on servers without it)

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        per_round: int = PER_ROUND,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(name, options)
        host, username, password = (options.get(k) for k in ("host", "username", "password"))
        if not host or not username or not password:
            raise FatalError("imap: give host, username and password")
        self.host, self.username, self._password = str(host), str(username), str(password)
        self.tls = bool(options.get("tls", True))
        self.port = int(options.get("port") or (993 if self.tls else 143))
        self.folders = [str(f) for f in options.get("folders") or ["INBOX"]]
        self.sent_folder = options.get("sent_folder")
        self.solved_folder = options.get("solved_folder")
        keyword = options.get("solved_keyword")
        self.solved_keyword = str(keyword).lower() if keyword else None
        self.agents = Agents(options.get("agents") or ())
        self.pending_on_reply = bool(options.get("pending_on_reply", False))
        self._clock = clock
        self.start = start_of(options, "imap", clock())
        self.per_round = per_round
        self.timeout = timeout
        self._condstore = False
        self.counts: Counter[str] = Counter()  # ingested / duplicate / skipped / before_start
        self.idle = bool(options.get("idle", True))
        self._synced: tuple[int, int, int] | None = None  # first folder after the last sync

    # -- the connection ------------------------------------------------------------------

    def connect(self) -> IMAPClient:
        """A logged-in client (CONDSTORE enabled where offered)."""
        context = ssl.create_default_context() if self.tls else None
        try:
            client = IMAPClient(self.host, self.port, ssl=self.tls, ssl_context=context,
                                timeout=self.timeout)  # fmt: skip
        except (OSError, IMAPClientError) as exc:
            raise RetriableError(f"imap: cannot connect to {self.host}:{self.port}: "
                                 f"{type(exc).__name__}") from None  # fmt: skip
        client.normalise_times = False
        try:
            client.login(self.username, self._password)
        except LoginError:
            _close(client)
            raise FatalError(f"imap: login failed for {self.username} at {self.host}") from None
        except (OSError, IMAPClientError) as exc:
            _close(client)
            raise RetriableError(
                f"imap: login to {self.host} failed: {type(exc).__name__}"
            ) from None
        try:
            self._condstore = self.use_condstore and client.has_capability("CONDSTORE")
            if self._condstore:
                client.enable("CONDSTORE")
        except (OSError, IMAPClientError) as exc:
            _close(client)
            raise RetriableError(f"imap: {type(exc).__name__} after login") from None
        return client

    def roles(self, client: IMAPClient) -> list[tuple[str, str]]:
        """The watched folders with what they hold, each once."""
        out = [(f, "inbox") for f in self.folders]
        sent = self.sent_folder or client.find_special_folder(b"\\Sent")
        if sent:
            out.append((str(sent), "sent"))
        if self.solved_folder:
            out.append((str(self.solved_folder), "solved"))
        once: dict[str, str] = {}
        for folder, role in out:
            once.setdefault(folder, role)
        return list(once.items())

    # -- sync ----------------------------------------------------------------------------

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        state: dict[str, Any] = {
            "folders": {k: dict(v) for k, v in (cursor or {}).get("folders", {}).items()},
        }
        threads = Threads(self.agents, "", self.pending_on_reply, (cursor or {}).get("threads"))
        client = self.connect()
        try:
            roles = self.roles(client)
            while not stop.is_set():
                notes: list[str] = []
                fetched = [m for f, r in roles for m in self._round(client, f, r, state, notes)]
                changes = self._ingest(fetched, state, threads, notes)
                if not fetched and not notes:
                    break
                newest = max((m.mail.at for m in fetched if m.mail), default=None)
                yield Batch(changes, _cursor(state, threads), newest=newest, notes=notes)
            if stop.is_set():
                return
            notes = []
            changes = []
            for folder, role in roles:
                if role != "solved" and self.solved_keyword:
                    changes += self._flags(client, folder, state, threads, notes)
            first = state["folders"].get(self.folders[0]) or {}
            self._synced = (first.get("validity", 0), first.get("next", 0), first.get("modseq", 0))
            yield Batch(changes, _cursor(state, threads), notes=notes, done=True)
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise RetriableError(f"imap: connection to {self.host} lost: "
                                 f"{type(exc).__name__}") from None  # fmt: skip
        except IMAPClientError as exc:
            raise RetriableError(f"imap: the server refused a command: {_short(exc)}") from None
        finally:
            _close(client)

    def _open(self, client: IMAPClient, folder: str, state: dict[str, Any],
              notes: list[str]) -> tuple[dict[str, Any], dict[bytes, Any]]:  # fmt: skip
        """EXAMINE a folder and its cursor, reset when UIDVALIDITY changed."""
        info = client.select_folder(folder, readonly=True)
        validity = int(info.get(b"UIDVALIDITY", 0))
        mine = state["folders"].get(folder)
        if mine is not None and mine.get("validity") != validity:
            notes.append(f"{folder}: UIDVALIDITY changed, reading the folder again "
                         "(messages seen before are not counted twice)")  # fmt: skip
            mine = None
        if mine is None:
            found = client.search(["SINCE", self.start.date()])
            uidnext = int(info.get(b"UIDNEXT", 1))
            mine = {"validity": validity, "next": min(found, default=uidnext),
                    "modseq": _modseq(info), "uids": {}, "rescan": True}  # fmt: skip
            state["folders"][folder] = mine
        return mine, info

    def _round(self, client: IMAPClient, folder: str, role: str, state: dict[str, Any],
               notes: list[str]) -> list[Fetched]:  # fmt: skip
        """Up to ``per_round`` new messages of a folder; moves its next UID past them."""
        mine, info = self._open(client, folder, state, notes)
        uidnext = int(info.get(b"UIDNEXT", 0))
        if mine["next"] >= uidnext:
            mine["rescan"] = False
            mine["next"] = max(mine["next"], uidnext)
            return []
        uids = sorted(client.search(["UID", f"{mine['next']}:{uidnext - 1}"]))
        uids = [u for u in uids if mine["next"] <= u < uidnext]
        take = uids[: self.per_round]
        mine["next"] = take[-1] + 1 if len(uids) > len(take) else uidnext
        if not take:
            return []
        answer = client.fetch(take, ["FLAGS", "INTERNALDATE", SECTION])
        out = []
        for uid in take:
            data = answer.get(uid, {})
            flags = tuple(_flag(f) for f in data.get(b"FLAGS", ()))
            received = data.get(b"INTERNALDATE")
            received = (
                aware(received, "INTERNALDATE").astimezone(dt.UTC) if received else self._clock()
            )
            raw = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), None)
            out.append(Fetched(folder, role, uid, flags, received, raw))
        return out

    def _ingest(self, fetched: list[Fetched], state: dict[str, Any], threads: Threads,
                notes: list[str]) -> list[TicketChange]:  # fmt: skip
        for item in fetched:
            item.problem = self._read(item)
        order = {f: n for n, f in enumerate(dict.fromkeys(m.folder for m in fetched))}
        fetched.sort(key=lambda m: (m.mail.at if m.mail else m.received, order[m.folder], m.uid))
        now = self._clock()
        changes: list[TicketChange] = []
        for item in fetched:
            mine = state["folders"][item.folder]
            mail = item.mail
            if item.problem == "before start":
                self.counts["before_start"] += 1
                continue
            if item.problem or mail is None:
                self.counts["skipped"] += 1
                notes.append(f"{item.folder} UID {item.uid}: skipped: {item.problem}")
                continue
            keyword = self.solved_keyword in {f.lower() for f in item.flags}
            known = threads.ids.get(mail.message_id)
            if known is not None:  # a copy in another folder, a rescan, a reused Message-ID
                self.counts["duplicate"] += 1
                ticket = known
                if item.role == "solved" and (
                    not mine.get("rescan")
                    or threads.threads.get(ticket, [0, 0, 0])[2] <= mail.at.timestamp()
                ):
                    changes += _some(threads.mark(ticket, "solved", now))
            elif mail.automatic and threads.ticket_for(mail) is None:
                self.counts["skipped"] += 1
                notes.append(f"{item.folder} UID {item.uid}: skipped: an automatic message "
                             "(auto-reply, bulk or bounce) outside any thread")  # fmt: skip
                continue
            else:
                self.counts["ingested"] += 1
                change = threads.add(mail)
                ticket = change.ticket
                changes.append(change)
                if item.role == "solved" or keyword:
                    changes += _some(threads.mark(ticket, "solved", now))
            _remember(mine, item.uid, ticket, keyword)
        return changes

    def _read(self, item: Fetched) -> str:
        """Parse one message's headers into ``item.mail``; the reason it is unusable."""
        if item.raw is None:
            return "the server sent no headers"
        if item.received < self.start:
            return "before start"
        try:
            if not item.raw.strip():
                return "no headers"
            key = hashlib.sha256(item.raw + item.received.isoformat().encode()).hexdigest()
            headers = read_headers(item.raw)
            if not headers.keys():
                return "no headers"
            item.mail = mail_from_headers(key, headers, item.received, sent=item.role == "sent")
        except Exception as exc:  # a parser bug on odd input must not stop the sync
            return f"unreadable headers ({type(exc).__name__})"
        if not item.mail.sender and item.role != "sent":
            return "no sender address"
        return ""

    def _flags(self, client: IMAPClient, folder: str, state: dict[str, Any], threads: Threads,
               notes: list[str]) -> list[TicketChange]:  # fmt: skip
        """Solved keywords set or removed since the last sync on remembered messages."""
        mine, info = self._open(client, folder, state, notes)
        known = mine["uids"]
        if not known:
            mine["modseq"] = _modseq(info)
            return []
        highest = _modseq(info) if self._condstore else None
        since = mine.get("modseq")
        if highest is not None and since is not None:
            if highest <= since:
                return []
            changed = client.search(["UID", f"1:{max(1, mine['next'] - 1)}", "MODSEQ",
                                     str(since + 1)])  # fmt: skip
            uids = [u for u in changed if str(u) in known]
        else:  # no CONDSTORE: re-read the flags of the recent UIDs
            uids = sorted(int(u) for u in known)
        answer = client.fetch(uids, ["FLAGS"]) if uids else {}
        now = self._clock()
        changes: list[TicketChange] = []
        for uid in uids:
            if uid not in answer:
                continue  # expunged meanwhile
            flags = {_flag(f).lower() for f in answer[uid].get(b"FLAGS", ())}
            ticket, had = known[str(uid)]
            has = self.solved_keyword in flags
            if has != had:
                known[str(uid)] = [ticket, has]
                thread = threads.threads.get(ticket)
                if has:
                    changes += _some(threads.mark(ticket, "solved", now))
                elif thread and thread[0] == "solved":
                    changes += _some(threads.mark(ticket, "open", now))
        mine["modseq"] = highest
        return changes

    # -- IDLE ----------------------------------------------------------------------------

    def wait_for_change(self, stop: threading.Event, timeout: float) -> bool | None:
        """Block until the first watched folder reports new mail or changed flags (IMAP
        IDLE), ``timeout`` seconds pass or ``stop`` is set; True when something changed,
        also when it changed since the last sync ended (before IDLE began). None when the
        server has no IDLE or ``idle: false`` is configured. Errors are Retriable/FatalError."""
        if not self.idle:
            return None
        client = self.connect()
        try:
            if not client.has_capability("IDLE"):
                return None
            info = client.select_folder(self.folders[0], readonly=True)
            now = (int(info.get(b"UIDVALIDITY", 0)), int(info.get(b"UIDNEXT", 0)), _modseq(info))
            if self._synced is not None and now != self._synced:
                return True
            client.idle()
            began = dt.datetime.now(dt.UTC).timestamp()
            limit = min(timeout, IDLE_RENEW)
            try:
                while not stop.is_set():
                    left = limit - (dt.datetime.now(dt.UTC).timestamp() - began)
                    if left <= 0:
                        return False
                    for response in client.idle_check(timeout=min(1.0, left)):
                        if len(response) >= 2 and response[1] in (b"EXISTS", b"FETCH"):
                            return True
                return False
            finally:
                client.idle_done()
        except (OSError, imaplib.IMAP4.abort, IMAPClientError) as exc:
            raise RetriableError(
                f"imap: IDLE on {self.host} failed: {type(exc).__name__}"
            ) from None
        finally:
            _close(client)


def _cursor(state: dict[str, Any], threads: Threads) -> Cursor:
    folders = {k: {**v, "uids": dict(v["uids"])} for k, v in state["folders"].items()}
    return {"folders": folders, "threads": _copy(threads.dump())}


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _remember(mine: dict[str, Any], uid: int, ticket: str, keyword: bool) -> None:
    uids = mine["uids"]
    uids[str(uid)] = [ticket, keyword]
    if len(uids) > RECENT_UIDS:
        for old in sorted(uids, key=int)[: len(uids) - RECENT_UIDS]:
            del uids[old]


def _some(change: TicketChange | None) -> list[TicketChange]:
    return [change] if change is not None else []


def _modseq(info: Mapping[bytes, Any]) -> int | None:
    value = info.get(b"HIGHESTMODSEQ")
    return int(value) if value is not None and b"NOMODSEQ" not in info else None


def _flag(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # closing a broken connection: nothing left to do
        try:
            client.shutdown()
        except Exception:
            pass
