"""The board (GET /) in a real headless Chromium: what a phone and a desktop show."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from tests.monitor.conftest import T0, Clock, make_app, write_config
from tests.monitor.tickets import at, batch, ticket

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
NOW = at(T0, 60)  # Monday 10:00 UTC
HOSTILE = '<script>alert(1)</script> & "quotes"'
TOKEN = "board-token-7f3a"


def hostile(number: str, created: Any) -> Any:
    change = ticket(number, created)
    return dataclasses.replace(change, fields={**change.fields, "subject": HOSTILE})


def board_app(tmp_path: Path, server: str = "") -> Any:
    """The app at NOW: #1 breached (urgent, first response due 09:30), #2 at risk (due 10:10),
    #3 on track (due 13:50), #4 at risk (due 10:12) with markup in its subject."""
    app = make_app(write_config(tmp_path, f"sqlite:///{tmp_path / 'board.db'}", server), Clock(NOW))
    ext = app.extensions["slamon"]
    ext.connectors["desk"].pending = [
        batch(
            ticket("1", T0, priority="urgent"),
            ticket("2", at(NOW, -4 * 60 + 10)),
            ticket("3", at(NOW, -10)),
            hostile("4", at(NOW, -4 * 60 + 12)),
        )
    ]
    assert ext.scheduler.sync_once("desk")
    return app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def serve(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="board", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def board_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(board_app(tmp_path_factory.mktemp("board")))


@pytest.fixture(scope="module")
def locked_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = board_app(tmp_path_factory.mktemp("locked"), server=f"  api_token: {TOKEN}")
    yield from serve(app)


@pytest.mark.parametrize(
    "device, viewport",
    [("phone", {"width": 390, "height": 844}), ("desktop", {"width": 1366, "height": 900})],
)
def test_board_shows_breached_then_at_risk(
    browser: Any, board_url: str, device: str, viewport: dict[str, int]
) -> None:
    context = browser.new_context(viewport=viewport, is_mobile=device == "phone")
    page = context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        response = page.goto(board_url + "/")
        assert response is not None and response.status == 200
        assert response.headers["content-type"].startswith("text/html")

        assert page.text_content("#breached") == "1 breached"
        assert page.text_content("#at-risk") == "2 at risk"
        assert page.title() == "(1) slamon — breach board"

        rows = page.locator("#clocks > li")
        links = rows.locator("a")
        assert links.all_text_contents() == ["desk #1", "desk #2", "desk #4"]  # nearest first
        assert [links.nth(i).get_attribute("href") for i in range(3)] == [
            f"https://help.example/tickets/{n}" for n in ("1", "2", "4")
        ]
        assert [rows.nth(i).get_attribute("data-state") for i in range(3)] == [
            "breached",
            "at_risk",
            "at_risk",
        ]
        assert rows.locator(".when").all_text_contents() == [
            "breached 30m ago",
            "due in 10m",
            "due in 12m",
        ]
        body = page.inner_text("body")
        assert "desk #3" not in body and "Ticket 3" not in body  # on track: not on the board

        # Markup in a subject is text: shown as typed, never run.
        assert HOSTILE in rows.nth(2).inner_text()
        assert page.locator("body script").count() == 0
        assert dialogs == [] and errors == []

        assert page.get_attribute('meta[http-equiv="refresh"]', "content") == "15"
        fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert fits, page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"board-{device}.png"), full_page=True)
    finally:
        context.close()


def test_board_needs_the_token_when_one_is_configured(browser: Any, locked_url: str) -> None:
    anonymous = browser.new_context()
    try:
        # (page.goto would not return here: Playwright cancels the Basic prompt as an error)
        response = anonymous.request.get(locked_url + "/")
        assert response.status == 401
        assert response.json()["error"] == "unauthorized"
        challenges = [
            h["value"] for h in response.headers_array if h["name"].lower() == "www-authenticate"
        ]
        assert any(c.startswith("Basic ") for c in challenges), challenges
        assert "desk #1" not in response.text()
    finally:
        anonymous.close()

    wrong = browser.new_context(http_credentials={"username": "me", "password": "guess"})
    try:
        response = wrong.new_page().goto(locked_url + "/")
        assert response is not None and response.status == 401
    finally:
        wrong.close()

    # The token as the Basic password: what a person's browser sends after its prompt.
    signed_in = browser.new_context(http_credentials={"username": "me", "password": TOKEN})
    try:
        page = signed_in.new_page()
        response = page.goto(locked_url + "/")
        assert response is not None and response.status == 200
        assert page.text_content("#breached") == "1 breached"
    finally:
        signed_in.close()
