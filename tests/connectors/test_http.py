"""The shared HTTP layer against a real server on loopback: Retry-After honoured to the
request, 5xx retried, credentials refused stop the connector, malformed bodies retried,
and a shutdown ends every wait."""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask, Response, jsonify, request

from connectors.base import FatalError, RetriableError
from connectors.http import Http, retry_after
from tests.fakes.serve import serving

SECRET = "s3cr3t-t0ken-value"


class Script:
    """A server that answers from a list of (status, headers, body) and notes when each
    request came."""

    def __init__(self, *answers: tuple[int, dict[str, str], str]) -> None:
        self.answers = list(answers)
        self.times: list[float] = []
        self.app = Flask("script")
        self.app.add_url_rule("/<path:_>", view_func=self.answer, methods=["GET", "POST"])

    def answer(self, _: str) -> Response:
        self.times.append(time.monotonic())
        status, headers, body = self.answers.pop(0) if self.answers else (200, {}, "{}")
        return Response(body, status=status, headers=headers, mimetype="application/json")


def client(url: str, stop: threading.Event | None = None, **kwargs) -> Http:
    return Http("fake", url, stop or threading.Event(), secrets=[SECRET], **kwargs)


def test_retry_after_is_honoured_to_the_request():
    script = Script((429, {"Retry-After": "1"}, '{"error": "slow down"}'), (200, {}, '{"ok": 1}'))
    with serving(script.app) as url:
        assert client(url).get("/api/things") == {"ok": 1}
    early = script.times[1] - script.times[0]
    assert early >= 1.0, "a request came before Retry-After elapsed"


def test_server_errors_are_retried_with_backoff_then_given_up():
    script = Script((502, {}, "bad gateway"), (503, {}, "busy"), (200, {}, '{"n": 2}'))
    with serving(script.app) as url:
        assert client(url).get("/x") == {"n": 2}
        burst = Script(*[(500, {}, "oops")] * 10)
        with serving(burst.app) as url2:
            with pytest.raises(RetriableError, match=r"HTTP 500 from /x \(3 attempts\)"):
                client(url2, attempts=3).get("/x")
            assert len(burst.times) == 3


def test_refused_credentials_stop_the_connector_without_the_secret():
    script = Script((401, {}, f'{{"error": "invalid token {SECRET}"}}'))
    with serving(script.app) as url:
        with pytest.raises(FatalError) as caught:
            client(url, headers={"Authorization": f"Bearer {SECRET}"}).get(f"/a?key={SECRET}")
    assert "HTTP 401" in str(caught.value) and SECRET not in str(caught.value)


def test_other_client_errors_are_reported_scrubbed():
    script = Script((400, {}, f'{{"description": "bad param {SECRET}"}}'))
    with serving(script.app) as url:
        with pytest.raises(RetriableError) as caught:
            client(url).get("/search")
    assert "HTTP 400" in str(caught.value) and SECRET not in str(caught.value)


@pytest.mark.parametrize("body", ['{"tickets": [', "<html>gateway</html>", ""])
def test_a_malformed_body_is_a_retriable_error(body):
    script = Script((200, {}, body))
    with serving(script.app) as url:
        with pytest.raises(RetriableError, match="malformed answer from /page"):
            client(url).get("/page")


def test_a_shutdown_ends_a_long_wait_at_once():
    stop = threading.Event()
    script = Script((429, {"Retry-After": "600"}, "{}"))
    with serving(script.app) as url:
        threading.Timer(0.3, stop.set).start()
        began = time.monotonic()
        with pytest.raises(RetriableError, match="stopping"):
            client(url, stop).get("/x")
        assert time.monotonic() - began < 5


def test_a_retry_after_too_long_ends_the_poll():
    script = Script((429, {"Retry-After": "3600"}, "{}"))
    with serving(script.app) as url:
        with pytest.raises(RetriableError) as caught:
            client(url).get("/x")
    assert caught.value.retry_after == 3600


def test_a_spent_budget_waits_for_the_reset():
    reset = str(time.time() + 1.2)
    script = Script(
        (200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}, "{}"), (200, {}, "{}")
    )
    with serving(script.app) as url:
        http = client(url)
        http.get("/a")
        http.get("/b")
    assert script.times[1] - script.times[0] >= 1.0


def test_retry_after_as_a_date():
    future = time.time() + 30
    text = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(future))
    assert 28 <= retry_after({"Retry-After": text}) <= 31
    assert retry_after({"Retry-After": "7"}) == 7
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({}) is None


def test_json_posts_and_not_found():
    app = Flask("echo")

    @app.post("/echo")
    def echo():
        return jsonify(request.get_json())

    with serving(app) as url:
        http = client(url)
        assert http.json("POST", "/echo", json={"a": [1, 2]}) == {"a": [1, 2]}
        assert http.request("GET", "/missing").status_code == 404
