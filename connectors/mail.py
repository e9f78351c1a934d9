"""What the mail connectors (imap, gmail, graph) share: the few headers slamon keeps of a
message (never a body), telling automatic mail and agents apart, and threading messages
into tickets.

A thread is a ticket. A message joins the thread of the first message it names in
``References``/``In-Reply-To`` that slamon has seen, else (a reply or forward whose client
dropped those headers) the open thread with the same normalized subject and customer, else
it starts a thread of its own. The source's own thread id (Gmail's ``threadId``, Graph's
``conversationId``) wins where there is one. What threading needs to remember lives in the
connector's cursor, bounded in size.
"""

from __future__ import annotations

import datetime as dt
import email.header
import email.utils
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from connectors.base import TicketChange
from rules.events import Author, Created, Event, FieldChange, Message

# RFC 3834 and the de-facto headers of autoresponders, list servers and bounces
AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
AUTO_HEADERS = ("x-autoreply", "x-autorespond", "x-auto-response-suppress")
BOUNCE_SENDERS = re.compile(r"^(mailer-daemon|postmaster)@", re.IGNORECASE)
REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|fw|fwd|aw|wg|sv|vs|antw|tr|rif|r|ha|на|отв|пересл|fwd?)\s*(?:\[\d+\])?\s*[:：]\s*)+",
    re.IGNORECASE,
)
MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
MAX_IDS = 50_000  # Message-IDs remembered for threading (oldest forgotten first)
MAX_THREADS = 20_000  # threads whose state is remembered
SUBJECT_WINDOW = 30 * 86400.0  # a headerless reply joins an open thread this recent


@dataclass(frozen=True)
class Mail:
    """One message as slamon keeps it."""

    key: str  # the source's id of this copy
    message_id: str  # normalized Message-ID, or one made from ``key`` when it has none
    parents: tuple[str, ...]  # References then In-Reply-To, normalized, nearest last
    subject: str
    sender: str  # lower-case address, "" when none can be read
    recipients: tuple[str, ...]
    at: dt.datetime
    automatic: bool
    sent: bool = False  # found among the mailbox's sent mail: the team wrote it
    thread_hint: str | None = None  # the source's own thread id

    @property
    def is_reply(self) -> bool:
        return bool(self.parents) or bool(REPLY_PREFIX.match(self.subject))


class Agents:
    """Who counts as an agent: full addresses and ``@domain`` entries, any case."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.addresses = set()
        self.domains = set()
        for pattern in patterns:
            pattern = pattern.strip().lower()
            if pattern.startswith("@"):
                self.domains.add(pattern[1:])
            elif pattern:
                self.addresses.add(pattern)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str) or "@" not in address:
            return False
        address = address.lower()
        return address in self.addresses or address.rpartition("@")[2] in self.domains


def read_headers(raw: bytes) -> EmailMessage:
    """The header block of a raw message (a body after it is ignored). Tolerant: 8-bit
    bytes and broken lines never raise."""
    return BytesHeaderParser(policy=compat32).parsebytes(raw, headersonly=True)


def text(value: Any) -> str:
    """A header value as text: RFC 2047 encoded words decoded, unknown charsets and
    undecodable bytes replaced, folding removed."""
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        value = str(value)
    try:
        parts = email.header.decode_header(str(value))
    except Exception:  # a malformed encoded word: keep it as written
        return " ".join(str(value).split())
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            try:
                out.append(chunk.decode(charset or "ascii", errors="replace"))
            except LookupError:  # an unknown charset
                out.append(chunk.decode("utf-8", errors="replace"))
        else:
            out.append(chunk)
    return " ".join("".join(out).split())


def message_ids(value: str | None) -> list[str]:
    """The Message-IDs in a header, normalized (lower-case, brackets kept)."""
    return [f"<{found.lower()}>" for found in MESSAGE_ID.findall(value or "")]


def normalize_subject(subject: str) -> str:
    """A subject without reply/forward prefixes and spacing, lower-case."""
    return " ".join(REPLY_PREFIX.sub("", subject).split()).casefold()


def is_automatic(headers: Mapping[str, str], sender: str = "") -> bool:
    """Auto-replies, bulk and list mail and bounces: ``system`` messages that never start
    or stop a clock."""
    submitted = headers.get("auto-submitted", "").strip().lower()
    if submitted and not submitted.startswith("no"):
        return True
    if headers.get("precedence", "").strip().lower() in AUTO_PRECEDENCE:
        return True
    if any(name in headers for name in AUTO_HEADERS):
        return True
    if headers.get("list-id") or headers.get("list-unsubscribe"):
        return True
    return bool(BOUNCE_SENDERS.match(sender))


def mail_from_headers(
    key: str,
    headers: EmailMessage | Iterable[tuple[str, str]] | Mapping[str, str],
    received: dt.datetime,
    *,
    sent: bool = False,
    thread_hint: str | None = None,
) -> Mail:
    """A :class:`Mail` from a message's headers. ``received`` (the server's arrival time)
    stands in for a missing or unreadable Date, and caps a Date in the future."""
    pairs = _pairs(headers)
    first: dict[str, str] = {}
    for name, value in pairs:
        first.setdefault(name.lower(), value)
    own = message_ids(first.get("message-id"))
    message_id = own[0] if own else f"<{_digest(key)}@slamon.invalid>"
    parents: list[str] = []
    for found in message_ids(first.get("references")) + message_ids(first.get("in-reply-to")):
        if found != message_id and found not in parents:
            parents.append(found)
    sender = _address(first.get("from", "")) or _address(first.get("sender", ""))
    recipients = tuple(
        address
        for _, address in email.utils.getaddresses(
            [text(first.get(name, "")) for name in ("to", "cc")]
        )
        if "@" in address
    )
    return Mail(
        key=key,
        message_id=message_id,
        parents=tuple(parents[-50:]),  # a loop of References cannot grow without end
        subject=text(first.get("subject"))[:500],
        sender=sender,
        recipients=tuple(r.lower() for r in recipients[:50]),
        at=_date(first.get("date"), received),
        automatic=is_automatic(first, sender),
        sent=sent,
        thread_hint=thread_hint,
    )


def _pairs(headers: Any) -> list[tuple[str, str]]:
    if isinstance(headers, EmailMessage):
        return [(name, text(value)) for name, value in headers.items()]
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def _address(value: str) -> str:
    _, address = email.utils.parseaddr(text(value))
    return address.lower() if "@" in address else ""


def _date(value: str | None, received: dt.datetime) -> dt.datetime:
    try:
        when = email.utils.parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError, IndexError, OverflowError):
        when = None
    if when is None or when.tzinfo is None or when.year < 1990:
        return received
    return min(when.astimezone(dt.UTC), received)  # no message is written after it arrives


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


class Threads:
    """Threads messages into tickets and turns each into the ticket change it makes.
    Its state (``dump``/``load``) goes into the connector's cursor."""

    def __init__(
        self,
        agents: Agents,
        queue: str = "",
        pending_on_reply: bool = False,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        self.agents = agents
        self.queue = queue
        self.pending_on_reply = pending_on_reply
        state = state or {}
        self.ids: dict[str, str] = dict(state.get("ids", {}))  # Message-ID -> ticket
        self.subjects: dict[str, str] = dict(state.get("subjects", {}))  # subject|customer
        # ticket -> [status, customer, last message time]
        self.threads: dict[str, list[Any]] = {
            k: list(v) for k, v in state.get("threads", {}).items()
        }

    def dump(self) -> dict[str, Any]:
        return {"ids": self.ids, "subjects": self.subjects, "threads": self.threads}

    def author(self, mail: Mail) -> Author:
        if mail.automatic:
            return "system"
        return "agent" if mail.sent or mail.sender in self.agents else "customer"

    def customer(self, mail: Mail) -> str:
        if self.author(mail) == "customer":
            return mail.sender
        return next((r for r in mail.recipients if r not in self.agents), "")

    def ticket_for(self, mail: Mail) -> str | None:
        """The ticket a message joins, or None when it starts one."""
        if mail.thread_hint:
            hinted = _digest(f"thread:{mail.thread_hint}")
            return hinted if hinted in self.threads else None
        for parent in reversed(mail.parents):
            if parent in self.ids:
                return self.ids[parent]
        if mail.message_id in self.ids:  # the same message seen in another folder
            return self.ids[mail.message_id]
        if mail.is_reply:
            found = self.subjects.get(self._subject_key(mail))
            thread = self.threads.get(found or "")
            if found and thread and mail.at.timestamp() - thread[2] <= SUBJECT_WINDOW:
                return found
        return None

    def add(self, mail: Mail) -> TicketChange:
        """The change a message makes to its thread's ticket."""
        who = self.author(mail)
        ticket = self.ticket_for(mail)
        events: list[Event] = []
        event_id = f"mail:{mail.message_id}"
        if ticket is None:
            root = f"thread:{mail.thread_hint}" if mail.thread_hint else mail.message_id
            ticket = _digest(root)
            self.threads[ticket] = ["open", self.customer(mail), mail.at.timestamp()]
            events.append(
                Created(
                    id="created",
                    at=mail.at,
                    fields=self._fields(mail, "open"),
                    by=who,
                )
            )
        thread = self.threads[ticket]
        status = thread[0]
        events.append(Message(id=event_id, at=mail.at, author=who))
        new = status
        if who == "customer" and status in ("solved", "closed", "pending"):
            new = "open"
        elif who == "agent" and self.pending_on_reply and status == "open":
            new = "pending"
        if new != status:
            events.append(
                FieldChange(
                    id=f"status:{mail.message_id}", at=mail.at, field="status", new=new, old=status
                )
            )
        thread[0] = new
        thread[2] = max(thread[2], mail.at.timestamp())
        if not thread[1]:
            thread[1] = self.customer(mail)
        self._remember(mail, ticket)
        return TicketChange(
            ticket=ticket,
            fields=self._fields(mail, new, thread[1]),
            events=events,
            updated_at=mail.at,
        )

    def mark(self, ticket: str, status: str, at: dt.datetime) -> TicketChange | None:
        """A thread marked solved (a keyword, label or folder) or unmarked (back to open),
        seen at ``at``; None when nothing changes or the thread is unknown."""
        thread = self.threads.get(ticket)
        if thread is None or thread[0] == status:
            return None
        old, thread[0] = thread[0], status
        change = FieldChange(
            id=f"status:{status}:{at.timestamp():.3f}", at=at, field="status", new=status, old=old
        )
        return TicketChange(ticket=ticket, fields={"status": status}, events=[change])

    def _fields(self, mail: Mail, status: str, customer: str = "") -> dict[str, Any]:
        return {
            "status": status,
            "priority": "normal",
            "queue": self.queue,
            "channel": "email",
            "type": "",
            "tags": frozenset(),
            "requester": customer or self.customer(mail),
            "subject": mail.subject,
        }

    def _subject_key(self, mail: Mail) -> str:
        return f"{normalize_subject(mail.subject)}|{self.customer(mail)}"

    def _remember(self, mail: Mail, ticket: str) -> None:
        self.ids.pop(mail.message_id, None)
        self.ids[mail.message_id] = ticket
        if normalize_subject(mail.subject):
            key = self._subject_key(mail)
            self.subjects.pop(key, None)
            self.subjects[key] = ticket
        _trim(self.ids, MAX_IDS)
        _trim(self.subjects, MAX_IDS)
        _trim(self.threads, MAX_THREADS)


def _trim(mapping: dict[str, Any], limit: int) -> None:
    """Forget the oldest entries (dicts keep insertion order) beyond ``limit``."""
    for key in list(mapping)[: max(0, len(mapping) - limit)]:
        del mapping[key]
