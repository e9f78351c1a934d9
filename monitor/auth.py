"""Bearer auth for the API and the board, basic auth for /metrics, when configured."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, current_app, jsonify, request


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _basic() -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


def token_ok() -> bool:
    """The API token as a Bearer token, or as the password of basic auth (so a browser
    can open the board)."""
    token = current_app.extensions["slamon"].api_token
    if token is None:
        return True
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and _equal(header[7:].strip(), token):
        return True
    basic = _basic()
    return basic is not None and _equal(basic[1], token)


def needs_token(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not token_ok():
            response = jsonify({"error": "unauthorized", "detail": "a valid API token is required"})
            response.status_code = 401
            # One header per challenge: browsers (Chromium) read only the first challenge of
            # a header, and a browser needs Basic to open the board.
            response.headers["WWW-Authenticate"] = 'Bearer realm="slamon"'
            response.headers.add("WWW-Authenticate", 'Basic realm="slamon"')
            return response
        return view(*args, **kwargs)

    return wrapped


def metrics_auth_ok() -> bool:
    expected = current_app.extensions["slamon"].metrics_auth
    if expected is None:
        return True
    basic = _basic()
    return basic is not None and _equal(basic[0], expected[0]) and _equal(basic[1], expected[1])


def metrics_denied() -> Response:
    response = Response("unauthorized\n", status=401, mimetype="text/plain")
    response.headers["WWW-Authenticate"] = 'Basic realm="slamon metrics"'
    return response
