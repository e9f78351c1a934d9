"""Odd and hostile mail, built on the fly: what a support mailbox receives from broken
clients, old gateways, spammers and loops. Each entry says what a connector must make of
it where that is certain: ``ingested`` (a customer message), ``skipped`` (counted and
noted with a reason), ``duplicate`` (a Message-ID seen before) or ``either``."""

from __future__ import annotations

import random
from dataclasses import dataclass

DOMAIN = "example.test"


@dataclass(frozen=True)
class Odd:
    label: str
    raw: bytes
    expect: str = "either"  # ingested, skipped, duplicate, either


def _msg(*headers: bytes | str, body: bytes = b"hello\r\n") -> bytes:
    lines = [h.encode("utf-8") if isinstance(h, str) else h for h in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _plain(n: int, *extra: bytes | str, mid: str | None = None, subject: str = "") -> bytes:
    mid = mid or f"<odd-{n}@{DOMAIN}>"
    return _msg(
        f"From: Customer {n} <c{n}@customer.test>",
        f"To: support@{DOMAIN}",
        f"Subject: {subject or f'Question {n}'}",
        "Date: Mon, 30 Nov 2026 10:00:00 +0000",
        f"Message-ID: {mid}",
        *extra,
    )


def corpus(seed: int = 5) -> list[Odd]:
    rng = random.Random(seed)
    out: list[Odd] = []
    add = out.append
    n = 0

    def nxt() -> int:
        nonlocal n
        n += 1
        return n

    # charsets: unknown, wrong and raw 8-bit
    for charset in (
        "x-unknown",
        "utf-7",
        "koi8-r",
        "iso-2022-jp",
        "bogus charset",
        "utf-8\x01",
        "",
        "windows-1252",
        "gb2312",
        "utf-16",
    ):
        i = nxt()
        add(
            Odd(
                f"charset {charset!r}", _plain(i, subject=f"=?{charset}?Q?caf=E9?= {i}"), "ingested"
            )
        )
        i = nxt()
        add(
            Odd(
                f"content charset {charset!r}",
                _plain(i, f'Content-Type: text/plain; charset="{charset}"'),
                "ingested",
            )
        )
    for encoding in ("latin-1", "koi8-r", "shift_jis", "cp1251", "utf-8"):
        for text in ("Grüße aus Köln", "Привет", "日本語の件名"):
            i = nxt()
            try:
                raw = text.encode(encoding)
            except UnicodeEncodeError:
                raw = text.encode("utf-8")
            head = b"Subject: " + raw + f" {i}".encode()
            sender = b"From: " + raw + f" <c{i}@customer.test>".encode()
            add(
                Odd(f"8-bit {encoding}", _msg(sender, head, f"Message-ID: <odd-{i}@x>"), "ingested")
            )
    # encoded words, valid and not
    words = [
        "=?utf-8?B?SGVsbG8gV29ybGQ=?=",
        "=?utf-8?Q?Gr=C3=BC=C3=9Fe?=",
        "=?utf-8?B?!!!notbase64?=",
        "=?utf-8?Q?unterminated",
        "=?utf-8?B?",
        "=?=?=?=",
        "=?utf-8?X?unknown_encoding?=",
        "=?iso-8859-1?q?caf=E9?= =?utf-8?b?w6k=?=",
        "=?UTF-8?B?" + "QQ==" * 2000 + "?=",
        "=?utf-8*en?Q?with_language?=",
        "=?utf-8?Q?=00=01=02?=",
        "=?utf-8?B?4pyTIOKckw==?=",
    ]
    for word in words:
        i = nxt()
        add(Odd(f"encoded word {word[:30]!r}", _plain(i, subject=word), "ingested"))
        i = nxt()
        add(
            Odd(
                f"encoded sender {word[:30]!r}",
                _msg(
                    f"From: {word} <c{i}@customer.test>",
                    f"Subject: w {i}",
                    f"Message-ID: <odd-{i}@x>",
                ),
                "ingested",
            )
        )
    # missing or garbage Date / Message-ID
    for _ in range(6):
        j = nxt()
        add(
            Odd(
                "no Date",
                _msg(
                    f"From: c{j}@customer.test", f"Subject: no date {j}", f"Message-ID: <odd-{j}@x>"
                ),
                "ingested",
            )
        )
        j = nxt()
        add(
            Odd(
                "no Message-ID",
                _msg(
                    f"From: c{j}@customer.test",
                    f"Subject: no id {j}",
                    "Date: Mon, 30 Nov 2026 10:00:00 +0000",
                ),
                "ingested",
            )
        )
        j = nxt()
        add(Odd("neither", _msg(f"From: c{j}@customer.test", f"Subject: bare {j}"), "ingested"))
    for date in (
        "yesterday",
        "Mon, 99 Foo 99999 99:99:99 +9999",
        "Thu, 01 Jan 1970 00:00:00 +0000",
        "Fri, 31 Dec 9999 23:59:59 +0000",
        "",
        "0",
        "2026-11-30T10:00:00Z",
        "Mon, 30 Nov 2026",
        "Mon, 30 Nov 2026 10:00:00 -2400",
        "\x00\x01",
        "Mon, 30 Nov 2026 25:61:61 +0000",
        "Sat, 29 Feb 2025 10:00:00 +0000",
    ):
        i = nxt()
        add(
            Odd(
                f"Date {date!r}",
                _msg(
                    f"From: c{i}@customer.test",
                    f"Subject: d {i}",
                    f"Date: {date}",
                    f"Message-ID: <odd-{i}@x>",
                ),
                "ingested",
            )
        )
    for mid in ("<>", "no-brackets@x", "<a b@x>", "<<<>>>", "<" + "x" * 5000 + "@x>", "<dup@@x>"):
        i = nxt()
        add(Odd(f"Message-ID {mid[:20]!r}", _plain(i, mid=mid), "either"))
    # duplicate Message-IDs: the first of each pair is ingested, the second is a duplicate
    for k in range(10):
        i = nxt()
        add(Odd("duplicate first", _plain(i, mid=f"<same-{k}@{DOMAIN}>"), "ingested"))
        i = nxt()
        add(Odd("duplicate second", _plain(i, mid=f"<same-{k}@{DOMAIN}>"), "duplicate"))
    # References loops and floods
    for k in range(5):
        a, b = f"<loop-a{k}@x>", f"<loop-b{k}@x>"
        i = nxt()
        add(Odd("loop a", _plain(i, f"References: {b}", f"In-Reply-To: {b}", mid=a), "ingested"))
        i = nxt()
        add(Odd("loop b", _plain(i, f"References: {a}", f"In-Reply-To: {a}", mid=b), "ingested"))
        i = nxt()
        add(
            Odd(
                "self reference",
                _plain(i, f"References: <self{k}@x> <self{k}@x>", mid=f"<self{k}@x>"),
                "ingested",
            )
        )
    flood = " ".join(f"<ref{k}@x>" for k in range(3000))
    i = nxt()
    add(Odd("3000 References", _plain(i, f"References: {flood}"), "ingested"))
    i = nxt()
    add(
        Odd(
            "folded References",
            _plain(i, "References: " + "\r\n ".join(f"<fold{k}@x>" for k in range(500))),
            "ingested",
        )
    )
    # size and shape
    attachment = b"QUFB" * (10 * 1024 * 1024 // 4)
    i = nxt()
    add(
        Odd(
            "10 MB attachment",
            _msg(
                f"From: c{i}@customer.test",
                f"Subject: big {i}",
                f"Message-ID: <odd-{i}@x>",
                "MIME-Version: 1.0",
                'Content-Type: multipart/mixed; boundary="b"',
                body=b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
                b"Content-Type: application/octet-stream\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n"
                + b"\r\n".join(attachment[k : k + 76] for k in range(0, len(attachment), 76))
                + b"\r\n--b--\r\n",
            ),
            "ingested",
        )
    )
    for _ in range(4):
        i = nxt()
        add(Odd("header only", f"From: c{i}@customer.test\r\nSubject: h {i}".encode(), "ingested"))
    add(Odd("empty message", b"", "skipped"))
    add(Odd("only a blank line", b"\r\n", "skipped"))
    add(Odd("only a body", b"\r\nhello\r\n", "skipped"))
    for _ in range(4):
        i = nxt()
        add(
            Odd(
                "NUL bytes",
                _msg(
                    f"From: c{i}@customer.test",
                    f"Subject: nul\x00{i}\x00",
                    f"Message-ID: <odd-{i}\x00@x>",
                    body=b"a\x00b",
                ),
                "ingested",
            )
        )
    for size in (1000, 10_000, 100_000, 998, 2000):
        i = nxt()
        add(Odd(f"long Subject {size}", _plain(i, subject="x" * size), "ingested"))
        i = nxt()
        add(
            Odd(
                f"long To {size}",
                _msg(
                    f"From: c{i}@customer.test",
                    f"Subject: to {i}",
                    "To: " + ", ".join(f"r{k}@x" for k in range(size // 10)),
                ),
                "ingested",
            )
        )
    # senders
    for sender in (
        "",
        "<>",
        "not an address",
        "@",
        "a@",
        "<<<a@b>>>",
        "=?utf-8?B?AAAA?=",
        "undisclosed-recipients:;",
        '"quoted, comma" <q@customer.test>',
    ):
        i = nxt()
        add(
            Odd(
                f"From {sender!r}",
                _msg(f"From: {sender}", f"Subject: s {i}", f"Message-ID: <odd-{i}@x>"),
                "either",
            )
        )
    i = nxt()
    add(Odd("no From", _msg(f"Subject: nobody {i}", f"Message-ID: <odd-{i}@x>"), "skipped"))
    # automatic mail outside any thread: skipped
    for auto in (
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated",
        "Precedence: bulk",
        "Precedence: junk",
        "Precedence: list",
        "X-Autoreply: yes",
        "List-Id: <news.x>",
        "Precedence: auto_reply",
    ):
        i = nxt()
        add(Odd(f"automatic {auto}", _plain(i, auto), "skipped"))
    i = nxt()
    add(
        Odd(
            "bounce",
            _msg(
                "From: MAILER-DAEMON@mx.customer.test",
                f"Subject: Undelivered {i}",
                f"Message-ID: <odd-{i}@x>",
            ),
            "skipped",
        )
    )
    # broken lines
    for raw in (
        b"Subject without colon\r\nFrom: x@customer.test\r\n\r\n",
        b" continuation first\r\nFrom: y@customer.test\r\n\r\n",
        b"From: lf@customer.test\nSubject: bare LF\n\nbody\n",
        b"From: cr@customer.test\rSubject: bare CR\r\rbody\r",
        b"From: sp@customer.test\r\nSubject : space before colon\r\n\r\n",
        b":\r\n: : :\r\nFrom: colon@customer.test\r\n\r\n",
    ):
        add(Odd("broken lines", raw, "either"))
    # noise: random bytes, and real-looking messages with random bytes spliced in
    while len(out) < 230:
        i = nxt()
        if i % 2:
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
            add(Odd("random bytes", blob, "either"))
        else:
            base = bytearray(_plain(i))
            for _ in range(rng.randrange(1, 8)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            add(Odd("mutated", bytes(base), "either"))
    return out
