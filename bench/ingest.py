"""How fast slamon ingests a Zendesk backfill, end to end, beside a floor in the same run.

A fake Zendesk (tests/fakes/zendesk.py, ``populate``: 100,000 generated tickets, about 5.4
normalized events each) is served with werkzeug on loopback. slamon's real path syncs it
into a fresh SQLite file: the scheduler's ``sync_once`` drives ``ZendeskConnector.sync``
(the incremental export at per_page=1000, the largest the API allows; one audits request
per ticket; users/show_many for authors not yet known; groups once) and stores each page
with ``monitor.ingest.store_batch`` (upsert, de-duplicate, evaluate, commit). The floor
fetches the same pages over HTTP with http.client, parses them with orjson and bulk-upserts
equivalent ticket and event rows with plain sqlite3 (``executemany``, one transaction per
export page, the same WAL pragmas). werkzeug's server answers ``Connection: close``, so both
open one TCP connection per request (about 1.004 requests per ticket: one audits page each,
plus the export pages, users/show_many and groups).

The fake runs in a separate process by default (``--server process``, forked before it is
filled), as a real Zendesk is another machine: in a thread of this process its request
handling would share the GIL with the client. Measured at 3,000 tickets, the two choices
gave the same ratio (33% either way; the client waits for each answer, so there is little
to overlap), and the floor is bound by the fake's ~1,000 requests/s in both;
``--server thread`` is there to compare. ``--profile`` prints cProfile's top costs of
slamon's sync to stderr.

Bitrix24 (``--bitrix24-sessions``, default 5,000; 0 skips it): a fake portal
(tests/fakes/bitrix24.py) with that many Open Lines sessions of about 8 messages each (a
tenth still open), its leaky bucket on and running ``--bitrix24-speed`` times real time, is
synced by ``Bitrix24Connector`` twice in the same run: batched (each ``batch`` carries 49
histories and the walk's next page) and unbatched (one history request per session), each
with its client-side bucket scaled to the same speed. A request count implies the time the
sync takes at the real 2 requests/s after a burst of 50. Printed before the last line:
``bitrix24: <n> sessions per request, <s>s at 2 req/s (unbatched <u>s), <k> limit errors``
(``k``: the 503 QUERY_LIMIT_EXCEEDED answers of both syncs).

Last line: ``ingest: <tickets/s> tickets/s, <pct>% of floor <floor tickets/s>``
"""

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its calendar.py would stand in
# for the standard library's: put the repository there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import base64
import cProfile
import datetime as dt
import http.client
import io
import multiprocessing
import pstats
import sqlite3
import tempfile
import threading
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
import yaml
from werkzeug.serving import WSGIRequestHandler, make_server

from connectors.bitrix24 import Bitrix24Connector
from connectors.bitrix24_client import BURST
from connectors.zendesk import ZendeskConnector
from monitor import create_app, register_connectors
from monitor.config import load_config
from monitor.database import upgrade
from tests.fakes import scenario
from tests.fakes.bitrix24 import BUCKET_RATE, BUCKET_SIZE, FakeBitrix24
from tests.fakes.zendesk import FakeZendesk

EMAIL, TOKEN = "bench@acme.test", "zd-bench-token"
START = dt.datetime(2025, 3, 3, 8, 0, tzinfo=dt.UTC)
PER_PAGE = 1000  # the incremental export's largest page
EXPORT = "/api/v2/incremental/tickets/cursor"
FIELDS = {"status": "status", "priority": "priority", "group_id": "queue", "type": "type",
          "tags": "tags"}  # fmt: skip


# -- the fake, served ----------------------------------------------------------------------


class Counting:
    """The fake's WSGI app, counting requests in a number shared across processes."""

    def __init__(self, app: Any, requests: Any) -> None:
        self.app, self.requests = app, requests

    def __call__(self, environ: Any, start_response: Any) -> Any:
        with self.requests.get_lock():
            self.requests.value += 1
        return self.app(environ, start_response)


class Quiet(WSGIRequestHandler):
    def log(self, *args: Any) -> None:  # a line on stderr per request would be timed too
        pass


def build_fake(tickets: int, seed: int) -> tuple[FakeZendesk, dict[str, int]]:
    fake = FakeZendesk(EMAIL, TOKEN)
    fake.populate(tickets, seed=seed)
    audits = sum(len(a) for a in fake.audits.values())
    return fake, {"tickets": len(fake.tickets), "audits": audits, "users": len(fake.users)}


def _serve_child(tickets: int, seed: int, requests: Any, pipe: Any) -> None:
    fake, sizes = build_fake(tickets, seed)
    server = make_server(
        "127.0.0.1", 0, Counting(fake.app, requests), threaded=True, request_handler=Quiet
    )
    pipe.send((server.server_port, sizes))
    server.serve_forever()


def serve(mode: str, tickets: int, seed: int) -> tuple[str, dict[str, int], Any, Any]:
    """(base URL, sizes, request counter, stop) for the fake served in ``mode``."""
    if mode == "process":
        ctx = multiprocessing.get_context("fork")
        requests = ctx.Value("q", 0)
        ours, theirs = ctx.Pipe()
        child = ctx.Process(target=_serve_child, args=(tickets, seed, requests, theirs))
        child.start()
        port, sizes = ours.recv()

        def stop() -> None:
            child.terminate()
            child.join(10)

        return f"http://127.0.0.1:{port}", sizes, requests, stop
    requests = multiprocessing.Value("q", 0)
    fake, sizes = build_fake(tickets, seed)
    server = make_server(
        "127.0.0.1", 0, Counting(fake.app, requests), threaded=True, request_handler=Quiet
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop_thread() -> None:
        server.shutdown()
        thread.join(10)

    return f"http://127.0.0.1:{server.server_port}", sizes, requests, stop_thread


# -- slamon --------------------------------------------------------------------------------


def slamon_sync(url: str, folder: Path, profile: bool) -> tuple[float, int, int, str]:
    """Seconds, tickets, events stored by slamon's own sync, and a profile (or "")."""
    database = folder / "slamon.db"
    config_path = folder / "slamon.yaml"
    options = {"url": url, "email": EMAIL, "token": TOKEN,
               "start": (START - dt.timedelta(days=1)).isoformat()}  # fmt: skip
    config_path.write_text(
        yaml.safe_dump(
            {
                "database": f"sqlite:///{database}",
                **scenario.RULES,
                "connectors": [{"name": "zd", "type": "zendesk", **options}],
            },
        )  # fmt: skip
    )
    config = load_config(config_path)
    connector = ZendeskConnector("zd", config.connectors[0].options(), per_page=PER_PAGE)
    app = create_app(config, connectors={"zd": connector})
    upgrade(app)
    register_connectors(app)
    scheduler = app.extensions["slamon"].scheduler
    profiler = cProfile.Profile() if profile else None
    began = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    ok = scheduler.sync_once("zd")
    if profiler is not None:
        profiler.disable()
    elapsed = time.perf_counter() - began
    assert ok, "slamon's sync failed"
    con = sqlite3.connect(database)
    tickets = con.execute("SELECT COUNT(*) FROM tickets").fetchone()[0]
    events = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    con.close()
    report = ""
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        report = out.getvalue()
    return elapsed, tickets, events, report


# -- the floor -----------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE tickets (id INTEGER PRIMARY KEY, connector TEXT, source_id TEXT, status TEXT,
    priority TEXT, queue TEXT, channel TEXT, type TEXT, tags TEXT, requester TEXT,
    subject TEXT, url TEXT, created_at REAL, updated_at REAL);
CREATE UNIQUE INDEX ix_tickets_source ON tickets (connector, source_id);
CREATE TABLE events (id INTEGER PRIMARY KEY, ticket_id INTEGER REFERENCES tickets (id),
    source_id TEXT, kind TEXT, at REAL, seq INTEGER, data TEXT);
CREATE UNIQUE INDEX ix_events_source ON events (ticket_id, source_id);
"""
UPSERT_TICKET = """
INSERT INTO tickets (connector, source_id, status, priority, queue, channel, type, tags,
    requester, subject, url, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (connector, source_id) DO UPDATE SET status = excluded.status,
    priority = excluded.priority, queue = excluded.queue, channel = excluded.channel,
    type = excluded.type, tags = excluded.tags, requester = excluded.requester,
    subject = excluded.subject, url = excluded.url, updated_at = excluded.updated_at
"""
INSERT_EVENT = """
INSERT INTO events (ticket_id, source_id, kind, at, seq, data) VALUES (?,?,?,?,?,?)
ON CONFLICT (ticket_id, source_id) DO NOTHING
"""


class Client:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.base = url
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port)
        basic = base64.b64encode(f"{EMAIL}/token:{TOKEN}".encode()).decode()
        self.headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}

    def get(self, path: str, **params: Any) -> Any:
        if path.startswith(self.base):
            path = path[len(self.base) :]
        target = f"{path}?{urlencode(params)}" if params else path
        self.conn.request("GET", target, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        assert response.status == 200, (target, response.status, body[:200])
        return orjson.loads(body)

    def every(self, path: str, key: str) -> list[Any]:
        body = self.get(path, **{"page[size]": 100})
        items = list(body[key])
        while body.get("meta", {}).get("has_more") and body[key]:
            body = self.get(body["links"]["next"])
            items += body[key]
        return items


def _at(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def floor_sync(url: str, folder: Path) -> tuple[float, int, int]:
    """Seconds, tickets, events of the floor: fetch, orjson, plain sqlite3."""
    database = folder / "floor.db"
    con = sqlite3.connect(database, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.executescript(SCHEMA)
    client = Client(url)
    began = time.perf_counter()
    roles: dict[int, str] = {}
    groups: dict[str, str] | None = None
    params: dict[str, Any] = {"start_time": int((START - dt.timedelta(days=1)).timestamp())}
    while True:
        page = client.get(EXPORT, per_page=PER_PAGE, **params)
        tickets = page["tickets"]
        audits = {t["id"]: client.every(f"/api/v2/tickets/{t['id']}/audits", "audits")
                  for t in tickets}  # fmt: skip
        wanted = {t["requester_id"] for t in tickets}
        for history in audits.values():
            for audit in history:
                wanted.add(audit["author_id"])
                wanted.update(e["author_id"] for e in audit["events"] if "author_id" in e)
        missing = sorted(wanted - roles.keys())
        for i in range(0, len(missing), 100):
            chunk = ",".join(str(u) for u in missing[i : i + 100])
            for user in client.get("/api/v2/users/show_many", ids=chunk)["users"]:
                roles[user["id"]] = user["role"]
        if groups is None:
            groups = {str(g["id"]): g["name"] for g in client.every("/api/v2/groups", "groups")}
        con.execute("BEGIN")
        con.executemany(UPSERT_TICKET, [_ticket_row(t, groups) for t in tickets])
        ids = dict(
            con.execute(
                "SELECT source_id, id FROM tickets WHERE connector = 'zd' AND source_id IN"
                f" ({','.join('?' * len(tickets))})",
                [str(t["id"]) for t in tickets],
            ).fetchall()
        )
        rows = []
        for t in tickets:
            rows += _event_rows(ids[str(t["id"])], t, audits[t["id"]], roles, groups)
        con.executemany(INSERT_EVENT, rows)
        con.execute("COMMIT")
        if page["end_of_stream"]:
            break
        params = {"cursor": page["after_cursor"]}
    elapsed = time.perf_counter() - began
    counts = [con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("tickets", "events")]
    con.close()
    return elapsed, counts[0], counts[1]


def _ticket_row(t: dict[str, Any], groups: dict[str, str]) -> tuple[Any, ...]:
    return ("zd", str(t["id"]), t["status"], t["priority"] or "normal",
            groups.get(str(t["group_id"]), ""), t["via"]["channel"], t["type"] or "",
            orjson.dumps(t["tags"]).decode(), str(t["requester_id"]), t["subject"],
            f"agent/tickets/{t['id']}", _at(t["created_at"]),
            _at(t["updated_at"]))  # fmt: skip


def _event_rows(
    tid: int,
    ticket: dict[str, Any],
    audits: list[dict[str, Any]],
    roles: dict[int, str],
    groups: dict[str, str],
) -> list[tuple[Any, ...]]:
    rows, seq = [], 0
    for audit in audits:
        at = _at(audit["created_at"])
        creates = [e for e in audit["events"] if e["type"] == "Create"]
        if creates:
            fields = {FIELDS[e["field_name"]]: e["value"] for e in creates
                      if e["field_name"] in FIELDS}  # fmt: skip
            if "queue" in fields:
                fields["queue"] = groups.get(str(fields["queue"]), "")
            data = {"by": roles.get(audit["author_id"], "customer"), "fields": fields}
            rows.append((tid, str(audit["id"]), "created", at, seq, orjson.dumps(data)))
            seq += 1
        for e in audit["events"]:
            if e["type"] == "Comment":
                role = "agent" if roles.get(e["author_id"]) in ("agent", "admin") else "customer"
                data = {"author": role, "public": e["public"]}
                rows.append((tid, str(e["id"]), "message", at, seq, orjson.dumps(data)))
            elif e["type"] == "Change" and e["field_name"] in FIELDS:
                data = {"field": FIELDS[e["field_name"]], "new": e["value"],
                        "old": e["previous_value"]}  # fmt: skip
                rows.append((tid, str(e["id"]), "field", at, seq, orjson.dumps(data)))
            seq += 1
    rating = ticket.get("satisfaction_rating")
    if rating and rating.get("score") in ("good", "bad"):
        data = {"survey": "csat", "score": 5 if rating["score"] == "good" else 1}
        eid = f"rating:{rating['id']}:{rating['score']}:{rating['updated_at']}"
        rows.append((tid, eid, "rating", _at(rating["updated_at"]), seq, orjson.dumps(data)))
    return rows


# -- Bitrix24: requests per session against the leaky bucket ------------------------------


def build_bitrix24(sessions: int, speed: float, seed: int) -> FakeBitrix24:
    """A portal with ``sessions`` Open Lines sessions of about 8 messages each: the client,
    a bot's greeting, the operator, back and forth; nine in ten closed."""
    fake = FakeBitrix24(speed=speed)
    operator, bot = fake.user("Olga Operator"), fake.user("Welcome Bot", bot=True)
    clients = [fake.user(f"Client{n} Bench", connector=True) for n in range(200)]
    lines = [fake.line(name, first_answer=600) for name in ("Support", "Sales", "Billing")]
    step = dt.timedelta(minutes=1)
    for n in range(sessions):
        when = START + dt.timedelta(minutes=7 * n)
        client = clients[(n * seed) % len(clients)]
        sid = fake.session(lines[n % len(lines)], client, when,
                           connector=("livechat", "telegrambot")[n % 2])  # fmt: skip
        authors = [client, bot, client, operator, client, operator, client, operator]
        for i, author in enumerate(authors[: 7 + n % 3]):
            fake.say(sid, author, when + i * step)
        if n % 10:
            fake.close(sid, when + 10 * step)
    return fake


def bitrix24_sync(base: str, fake: FakeBitrix24, batched: bool) -> tuple[int, int, int]:
    """Requests, 503 answers and tickets of one full sync from the beginning."""
    fake.requests = fake.limited = 0
    fake.level = 0.0
    options = {"url": f"{base}/rest/{fake.user_id}/{fake.code}/", "start": START.isoformat()}
    connector = Bitrix24Connector("bx", options, rate=BUCKET_RATE * fake.speed, burst=BURST,
                                  batched=batched)  # fmt: skip
    tickets: set[str] = set()
    for batch in connector.sync(None, threading.Event()):
        tickets.update(change.ticket for change in batch.changes)
    return fake.requests, fake.limited, len(tickets)


def at_real_rate(requests: int) -> float:
    """Seconds ``requests`` take at 2 requests/s once the burst of 50 is spent."""
    return max(0, requests - BUCKET_SIZE) / BUCKET_RATE


def bitrix24_line(sessions: int, speed: float, seed: int) -> str:
    fake = build_bitrix24(sessions, speed, seed)
    server = make_server("127.0.0.1", 0, fake.app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        batched, limited, tickets = bitrix24_sync(base, fake, batched=True)
        unbatched, limited_too, tickets_too = bitrix24_sync(base, fake, batched=False)
    finally:
        server.shutdown()
        thread.join(10)
    if tickets != sessions or tickets_too != sessions:
        print(f"warning: bitrix24 synced {tickets} and {tickets_too} of {sessions} sessions")
    return (
        f"bitrix24: {sessions / batched:.0f} sessions per request, {at_real_rate(batched):.0f}s"
        f" at 2 req/s (unbatched {at_real_rate(unbatched):.0f}s), {limited + limited_too}"
        " limit errors"
    )


# -- the run -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    parser.add_argument("--profile", action="store_true", help="cProfile slamon's sync")
    parser.add_argument("--bitrix24-sessions", type=int, default=5_000)
    parser.add_argument(
        "--bitrix24-speed", type=float, default=100.0, help="the fake portal's clock speed-up"
    )
    args = parser.parse_args()
    bitrix24 = (
        bitrix24_line(args.bitrix24_sessions, args.bitrix24_speed, args.seed)
        if args.bitrix24_sessions
        else ""
    )

    url, sizes, requests, stop = serve(args.server, args.tickets, args.seed)
    try:
        with tempfile.TemporaryDirectory(prefix="slamon-bench-") as tmp:
            folder = Path(tmp)
            before = requests.value
            seconds, tickets, events, report = slamon_sync(url, folder, args.profile)
            slamon_requests = requests.value - before
            before = requests.value
            floor_seconds, floor_tickets, floor_events = floor_sync(url, folder)
            floor_requests = requests.value - before
    finally:
        stop()

    print(
        f"fake zendesk ({args.server}): {sizes['tickets']} tickets, {sizes['audits']} audits,"
        f" {sizes['users']} users; export per_page={PER_PAGE}"
    )
    if report:
        print(report, file=sys.stderr)
    print(
        f"slamon: {seconds:.1f} s, {tickets} tickets, {events} events ({events / tickets:.2f}"
        f" each), {slamon_requests} requests ({slamon_requests / tickets:.3f} per ticket)"
    )
    print(
        f"floor (http.client + orjson + sqlite3): {floor_seconds:.1f} s, {floor_tickets}"
        f" tickets, {floor_events} events, {floor_requests} requests"
        f" ({floor_requests / floor_tickets:.3f} per ticket)"
    )
    if (tickets, events) != (floor_tickets, floor_events):
        print("warning: slamon and the floor stored different numbers of rows")
    if bitrix24:
        print(bitrix24)
    rate, floor_rate = tickets / seconds, floor_tickets / floor_seconds
    print(
        f"ingest: {rate:.0f} tickets/s, {100 * rate / floor_rate:.0f}% of floor"
        f" {floor_rate:.0f} tickets/s"
    )


if __name__ == "__main__":
    main()
