"""The mail core shared by the imap, gmail and graph connectors: headers to Mail,
automatic mail, agents, threading and status."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.mail import (
    Agents,
    Threads,
    is_automatic,
    mail_from_headers,
    normalize_subject,
    read_headers,
    text,
)
from rules.events import Created, FieldChange, Message

T = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
AGENTS = Agents(["@example.test", "Boss@Partner.test"])


def raw(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def mail(mid: str, sender: str, minutes: float, *extra: str, subject: str = "Help", **kw):
    headers = read_headers(
        raw(
            f"From: {sender}",
            "To: support@example.test",
            f"Subject: {subject}",
            f"Message-ID: {mid}",
            *extra,
        )
    )
    return mail_from_headers(mid, headers, T + dt.timedelta(minutes=minutes), **kw)


# -- headers ---------------------------------------------------------------------------------


def test_headers_become_a_mail():
    m = mail(
        "<A@Host>",
        "Carla <Carla@Customer.test>",
        5,
        "References: <r1@x> <r2@x>",
        "In-Reply-To: <r2@x>",
        "Date: Mon, 23 Nov 2026 09:03:00 +0000",
        subject="=?utf-8?Q?Gr=C3=BC=C3=9Fe?=",
    )
    assert m.message_id == "<a@host>" and m.parents == ("<r1@x>", "<r2@x>")
    assert m.sender == "carla@customer.test" and m.subject == "Grüße"
    assert m.at == T + dt.timedelta(minutes=3) and not m.automatic
    assert m.recipients == ("support@example.test",)


@pytest.mark.parametrize(
    "date", ["", "garbage", "Fri, 31 Dec 9999 23:59:59 +0000", "Thu, 01 Jan 1970 00:00:00 +0000"]
)
def test_a_missing_future_or_garbage_date_is_the_arrival(date):
    m = mail("<d@x>", "c@customer.test", 10, f"Date: {date}")
    assert m.at == T + dt.timedelta(minutes=10)


def test_no_message_id_gets_a_stable_one_from_the_key():
    h = read_headers(raw("From: c@customer.test", "Subject: x"))
    a, b = (mail_from_headers("key1", h, T) for _ in range(2))
    assert a.message_id == b.message_id and a.message_id.endswith("@slamon.invalid>")
    assert mail_from_headers("key2", h, T).message_id != a.message_id


def test_eight_bit_and_broken_encoded_words_never_raise():
    h = read_headers(
        b"From: J\xf6rg <j@customer.test>\r\nSubject: =?x-unknown?Q?caf=E9?= "
        b"\xff\xfe =?utf-8?B?!!!?=\r\n\r\n"
    )
    m = mail_from_headers("k", h, T)
    assert m.sender == "j@customer.test" and "caf" in m.subject
    assert text(None) == "" and text("a\r\n  b") == "a b"


def test_normalized_subjects():
    assert normalize_subject("Re: RE: Fwd:  Printer   ON fire") == "printer on fire"
    assert normalize_subject("AW: WG: Rechnung") == "rechnung"
    assert normalize_subject("Re[2]: x") == "x"


# -- automatic mail --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated",
        "Auto-Submitted: auto-notified; owner-email=x@y",
        "Precedence: bulk",
        "Precedence: junk",
        "Precedence: list",
        "Precedence: auto_reply",
        "Precedence: BULK",
        "X-Autoreply: yes",
        "X-Autorespond: on",
        "List-Id: <news.example>",
        "List-Unsubscribe: <mailto:u@x>",
    ],
)
def test_automatic_mail(header):
    assert mail("<a@x>", "c@customer.test", 0, header).automatic


@pytest.mark.parametrize(
    "header",
    ["Auto-Submitted: no", "Auto-Submitted: No", "Precedence: first-class", "X-Mailer: Outlook"],
)
def test_not_automatic(header):
    assert not mail("<a@x>", "c@customer.test", 0, header).automatic


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@mx.customer.test", "postmaster@customer.test"])
def test_bounces_are_automatic(sender):
    assert mail("<b@x>", sender, 0).automatic
    assert is_automatic({}, sender.lower())


# -- agents ----------------------------------------------------------------------------------


def test_agents_by_address_and_domain():
    assert "anyone@example.test" in AGENTS and "ANYONE@Example.Test" in AGENTS
    assert "boss@partner.test" in AGENTS and "other@partner.test" not in AGENTS
    assert "x@sub.example.test" not in AGENTS  # a domain is exact
    assert "" not in AGENTS and None not in AGENTS and "example.test" not in AGENTS


# -- threading -------------------------------------------------------------------------------


def test_threading_by_references_and_in_reply_to():
    threads = Threads(AGENTS)
    first = threads.add(mail("<q@x>", "c@customer.test", 0))
    reply = threads.add(mail("<a@x>", "agent@example.test", 10, "In-Reply-To: <q@x>"))
    later = threads.add(
        mail("<r@x>", "c@customer.test", 20, "References: <zz@x> <a@x>", subject="Something else")
    )
    assert first.ticket == reply.ticket == later.ticket
    assert isinstance(first.events[0], Created) and first.events[0].by == "customer"
    assert [
        e.author for c in (first, reply, later) for e in c.events if isinstance(e, Message)
    ] == ["customer", "agent", "customer"]
    assert first.fields["requester"] == "c@customer.test"


def test_subject_fallback_for_replies_without_headers():
    threads = Threads(AGENTS)
    first = threads.add(mail("<q@x>", "c@customer.test", 0, subject="Printer"))
    same = threads.add(mail("<r@x>", "c@customer.test", 5, subject="RE: printer"))
    other_customer = threads.add(mail("<o@x>", "d@customer.test", 6, subject="Re: Printer"))
    not_a_reply = threads.add(mail("<n@x>", "c@customer.test", 7, subject="Printer"))
    too_late = threads.add(mail("<l@x>", "c@customer.test", 60 * 24 * 40, subject="Re: Printer"))
    assert same.ticket == first.ticket
    assert len({first.ticket, other_customer.ticket, not_a_reply.ticket}) == 3
    assert too_late.ticket != first.ticket and too_late.ticket != not_a_reply.ticket


def test_sent_mail_is_the_agents_and_the_customer_is_the_recipient():
    threads = Threads(Agents([]))
    h = read_headers(
        raw(
            "From: someone@else.test",
            "To: Carla <carla@customer.test>",
            "Subject: Your renewal",
            "Message-ID: <s@x>",
        )
    )
    change = threads.add(mail_from_headers("s", h, T, sent=True))
    assert change.events[0].by == "agent"  # type: ignore[union-attr]
    assert change.fields["requester"] == "carla@customer.test"


def test_status_pending_reopen_and_marks():
    threads = Threads(AGENTS, pending_on_reply=True)
    q = threads.add(mail("<q@x>", "c@customer.test", 0))
    a = threads.add(mail("<a@x>", "agent@example.test", 5, "In-Reply-To: <q@x>"))
    assert a.fields["status"] == "pending"
    auto = threads.add(
        mail("<o@x>", "c@customer.test", 6, "In-Reply-To: <a@x>", "Auto-Submitted: auto-replied")
    )
    assert auto.fields["status"] == "pending"  # an auto-reply changes nothing
    assert [e.author for e in auto.events if isinstance(e, Message)] == ["system"]
    r = threads.add(mail("<r@x>", "c@customer.test", 7, "In-Reply-To: <a@x>"))
    assert r.fields["status"] == "open"
    solved = threads.mark(q.ticket, "solved", T + dt.timedelta(minutes=8))
    assert solved is not None and solved.fields["status"] == "solved"
    assert threads.mark(q.ticket, "solved", T) is None  # no change
    assert threads.mark("unknown", "solved", T) is None
    again = threads.add(mail("<s@x>", "c@customer.test", 9, "In-Reply-To: <a@x>"))
    change = [e for e in again.events if isinstance(e, FieldChange)]
    assert [(e.old, e.new) for e in change] == [("solved", "open")]


def test_state_round_trips_through_dump():
    threads = Threads(AGENTS)
    q = threads.add(mail("<q@x>", "c@customer.test", 0))
    restored = Threads(AGENTS, state=threads.dump())
    assert (
        restored.add(mail("<r@x>", "c@customer.test", 5, "In-Reply-To: <q@x>")).ticket == q.ticket
    )


def test_reference_loops_are_bounded():
    refs = " ".join(f"<r{n}@x>" for n in range(500))
    m = mail("<r7@x>", "c@customer.test", 0, f"References: {refs}", "In-Reply-To: <r7@x>")
    assert len(m.parents) == 50 and "<r7@x>" not in m.parents


# -- never raises ----------------------------------------------------------------------------

names = st.sampled_from(
    [
        "From",
        "Sender",
        "To",
        "Cc",
        "Subject",
        "Date",
        "Message-ID",
        "References",
        "In-Reply-To",
        "Auto-Submitted",
        "Precedence",
        "List-Id",
        "X-Autoreply",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(names, st.binary(max_size=200)), max_size=12), st.binary(max_size=300))
def test_mail_from_headers_never_raises(pairs, noise):
    block = b"".join(n.encode() + b": " + v + b"\r\n" for n, v in pairs) + noise
    m = mail_from_headers("k", read_headers(block), T)
    assert m.at <= T and m.message_id.startswith("<") and len(m.parents) <= 50
    threads = Threads(AGENTS)
    threads.add(m)
