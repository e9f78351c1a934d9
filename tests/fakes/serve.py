"""Serving a fake remote API over real HTTP on loopback, in a thread: one app, or a
test module's fakes one after the other on one port (:func:`fake_server`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar

from werkzeug.serving import make_server


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


class Fake(Protocol):
    app: Any


F = TypeVar("F", bound=Fake)


class FakeServer:
    """One loopback server a test module shares, answering as the fake each test put on
    it last (a fresh fake a test, one port for them all)."""

    def __init__(self) -> None:
        self.url = ""
        self.fake: Fake | None = None

    def serve(self, fake: F) -> F:
        """From now on ``fake`` answers; it is returned."""
        self.fake = fake
        return fake

    def __call__(self, environ: Any, start_response: Any) -> Any:
        assert self.fake is not None, "no fake served yet"
        return self.fake.app(environ, start_response)


@contextlib.contextmanager
def fake_server() -> Iterator[FakeServer]:
    """A :class:`FakeServer` on a free loopback port, for the ``with`` block."""
    server = FakeServer()
    with serving(server) as url:
        server.url = url
        yield server
