"""A fault-injecting reverse proxy on loopback, for putting in front of a real service.

Real services rarely rate-limit, fail or truncate on cue; the proxies and load balancers in
front of them do. :func:`proxy` serves on a free loopback port and forwards every request
to an upstream base URL (method, path, query, headers, body), answering with the upstream's
status, headers and body. Told to by :meth:`Proxy.fail`, it answers the next requests whose
target (path and query) contains a fragment itself instead:

- ``429``: Too Many Requests with ``Retry-After`` (seconds); a request arriving before a
  Retry-After it gave has elapsed is counted in ``early``, whatever its path;
- any other status (``502``, ``503``, ``504``, ...): that status, with no Retry-After;
- ``"truncate"``: the upstream's answer with its body cut to half (and a Content-Length
  that matches the cut, as a proxy that buffered a broken upstream answer would send);
- ``"drop"``: the connection closed before any answer.

Every request is logged (``log``: method, target, status; ``0`` for a dropped one).
Hop-by-hop headers are not forwarded, ``Host`` names the upstream, and the upstream is
asked for unencoded bodies (no ``Accept-Encoding``), so a truncation cuts the content and
not a compression stream. Redirects' ``Location`` headers are passed on as they are.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "proxy-connection",
}  # fmt: skip
REASONS = {429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}  # fmt: skip
Answer = int | str  # an HTTP status, "truncate" or "drop"


@dataclass
class Hit:
    """One request through the proxy and the status it was answered with (0: dropped)."""

    method: str
    target: str
    status: int


@dataclass
class Fault:
    fragment: str
    answers: list[Answer]
    after: int  # matching requests still to let through first
    retry_after: int
    given: list[Answer] = field(default_factory=list)


class Proxy:
    """The proxy's state, shared by its request threads (see the module's docstring)."""

    def __init__(self, upstream: str, timeout: float = 30.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) base URL: {upstream!r}")
        self.scheme, self.netloc = parts.scheme, parts.netloc
        self.host, self.port = parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.url = ""  # set once serving
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.log: list[Hit] = []
        self.early = 0
        self.blocked_until = 0.0  # monotonic: the end of the latest Retry-After given

    def fail(self, fragment: str, *answers: Answer, after: int = 0, retry_after: int = 1) -> None:
        """The next requests whose target contains ``fragment`` get these answers, one
        each, after ``after`` matching requests have gone through untouched. A 429
        carries ``Retry-After: retry_after``."""
        for answer in answers:
            if answer not in ("truncate", "drop") and not (
                isinstance(answer, int) and 400 <= answer < 600
            ):
                raise ValueError(f"not a fault: {answer!r}")
        with self.lock:
            self.faults.append(Fault(fragment, list(answers), after, retry_after))

    def pending(self) -> list[tuple[str, list[Answer]]]:
        """Faults not given yet (empty once every one was)."""
        with self.lock:
            return [(f.fragment, list(f.answers)) for f in self.faults if f.answers]

    def hits(self, fragment: str = "") -> list[Hit]:
        with self.lock:
            return [hit for hit in self.log if fragment in hit.target]

    # -- called by the request threads -------------------------------------------------

    def _arrived(self, target: str) -> tuple[Answer | None, int]:
        """The fault this request gets (None: forward it), and its Retry-After."""
        with self.lock:
            if time.monotonic() < self.blocked_until:
                self.early += 1
            for fault in self.faults:
                if fault.fragment not in target or not fault.answers:
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                answer = fault.answers.pop(0)
                fault.given.append(answer)
                if answer == 429:
                    self.blocked_until = time.monotonic() + fault.retry_after
                return answer, fault.retry_after
            return None, 0

    def _logged(self, method: str, target: str, status: int) -> None:
        with self.lock:
            self.log.append(Hit(method, target, status))

    def _forward(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        connection = kind(self.host, self.port, timeout=self.timeout)
        try:
            sent = [(k, v) for k, v in headers if k.lower() not in ("host", "accept-encoding")]
            connection.putrequest(method, self.prefix + target, skip_host=True)
            connection.putheader("Host", self.netloc)
            for name, value in sent:
                connection.putheader(name, value)
            if body is not None and not any(k.lower() == "content-length" for k, _ in sent):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, response.reason, response.getheaders(), response.read()
        finally:
            connection.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients' pools expect
    server: _Server

    def _proxy(self) -> None:
        proxy = self.server.proxy
        target = self.path
        body = self._body()
        answer, retry_after = proxy._arrived(target)
        if answer == "drop":
            proxy._logged(self.command, target, 0)
            self.close_connection = True
            return
        if isinstance(answer, int):
            extra = [("Retry-After", str(retry_after))] if answer == 429 else []
            reason = REASONS.get(answer, "Error")
            page = f"<html><head><title>{answer} {reason}</title></head></html>\n".encode()
            proxy._logged(self.command, target, answer)
            self._answer(answer, reason, [("Content-Type", "text/html"), *extra], page)
            return
        forwarded = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        try:
            status, reason, headers, content = proxy._forward(self.command, target, forwarded, body)
        except (OSError, http.client.HTTPException):
            page = b"<html><head><title>502 Bad Gateway</title></head></html>\n"
            proxy._logged(self.command, target, 502)
            self._answer(502, "Bad Gateway", [("Content-Type", "text/html")], page)
            return
        if answer == "truncate":
            content = content[: len(content) // 2]
        kept = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
        # logged before answering: a client that has its answer finds it in the log
        proxy._logged(self.command, target, status)
        if self.command == "HEAD":  # no body: the upstream's length stands
            self._answer(status, reason, kept, b"", length=False)
        else:
            kept = [(k, v) for k, v in kept if k.lower() != "content-length"]
            self._answer(status, reason, kept, content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _proxy

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length is not None else None

    def _answer(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        body: bytes,
        length: bool = True,
    ) -> None:
        # not send_response: it adds Server and Date, and the upstream's Date is the one
        # a client may read as the server's time
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the proxy keeps its own log
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: Proxy


@contextlib.contextmanager
def proxy(upstream: str) -> Iterator[Proxy]:
    """A :class:`Proxy` to ``upstream`` serving on a free loopback port (``.url``)."""
    state = Proxy(upstream)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.proxy = state
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
