"""HTTP for REST sources, written once: sessions, retries with capped exponential backoff
and jitter, Retry-After and X-RateLimit-* honoured without sleeping past a shutdown, and
errors sorted into :class:`RetriableError` and :class:`FatalError` with no secret in them.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import requests

from connectors.base import FatalError, RetriableError

USER_AGENT = "slamon (+https://github.com/slamon)"
BACKOFF_FIRST, BACKOFF_CAP = 1.0, 60.0
LONGEST_WAIT = 900.0  # a Retry-After longer than this ends the poll; the next one retries


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def server_time(response: requests.Response) -> dt.datetime | None:
    """The source's clock: an answer's ``Date`` header, None when it has none."""
    value = response.headers.get("Date")
    try:
        return email.utils.parsedate_to_datetime(value).astimezone(dt.UTC) if value else None
    except (TypeError, ValueError):
        return None


def holding_list(source: str, data: Any, key: str, path: str) -> dict[str, Any]:
    """``data`` when it is a JSON object whose ``key`` is a list, else a RetriableError."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise RetriableError(f"{source}: {path} answered without a {key!r} list")
    return data


class Http:
    """A connector's HTTP session. ``stop`` ends every wait early (shutdown)."""

    def __init__(
        self,
        source: str,
        base_url: str,
        stop: threading.Event,
        headers: Mapping[str, str] | None = None,
        auth: Any = None,
        secrets: Iterable[str] = (),
        timeout: float = 30.0,
        attempts: int = 6,
        sleep: Callable[[float], bool] | None = None,
        throttled: Callable[[requests.Response], bool] | None = None,
    ) -> None:
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.stop = stop
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json"
        self.session.headers.update(headers or {})
        self.session.auth = auth
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.timeout = timeout
        self.attempts = attempts
        self.wait = sleep or stop.wait  # returns True when stopped
        self.requests = 0
        # a source's own way of saying "rate limited" (Gmail: a 403 with a rate-limit
        # reason), waited out like a 429
        self.throttled = throttled or (lambda response: False)

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body of a successful answer (a malformed body is retried)."""
        return self.decode(self.request(method, path, **kwargs), path)

    def decode(self, response: requests.Response, path: str, expect: type | None = None) -> Any:
        """An answer's JSON body; a body that is not JSON (a truncated page, a proxy's
        error page), or not of the ``expect``-ed type, is a :class:`RetriableError`, so the
        cursor stays before it and the next poll reads it again."""
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError):
            raise RetriableError(
                f"{self.source}: a malformed answer from {self.where(path)} "
                f"(HTTP {response.status_code}, {len(response.content)} bytes)"
            ) from None
        if expect is not None and not isinstance(body, expect):
            raise RetriableError(
                f"{self.source}: a malformed answer from {self.where(path)} "
                f"(a JSON {type(body).__name__}, not a {expect.__name__})"
            )
        return body

    def get(self, path: str, **params: Any) -> Any:
        return self.json("GET", path, params=params or None)

    def request(
        self, method: str, path: str, *, allow: Collection[int] = (), **kwargs: Any
    ) -> requests.Response:
        """A successful answer, or one whose status is in ``allow`` (the caller reads its
        body: an expired sync token, a token to renew)."""
        url = self.url(path)
        failures = 0
        while True:  # a shutdown ends waits, not requests: the page in hand gets finished
            try:
                self.requests += 1
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.RequestException as exc:
                failures += 1
                problem = f"{type(exc).__name__} on {self.where(path)}"
                self._back_off(failures, problem)
                continue
            status = response.status_code
            if status in allow:
                return response
            if (
                status == 429
                or (status == 503 and "Retry-After" in response.headers)
                or (status >= 400 and self.throttled(response))
            ):
                delay = retry_after(response.headers)
                self._pause(delay if delay is not None else self._backoff(failures + 1), path)
                failures += delay is None
                continue
            if status >= 500:
                failures += 1
                self._back_off(failures, f"HTTP {status} from {self.where(path)}")
                continue
            if status in (401, 403):
                raise FatalError(
                    f"{self.source}: {self.where(path)} refused the credentials (HTTP {status}); "
                    "check the token and its permissions"
                )
            if status >= 400 and status != 404:
                raise RetriableError(
                    f"{self.source}: HTTP {status} from {self.where(path)}: "
                    f"{self.scrub(response.text[:300])}",
                    status=status,
                )
            self._respect_budget(response.headers, path)
            return response

    def where(self, path: str) -> str:
        """The path without query string (which may hold a secret) for messages."""
        return self.scrub(self.url(path).split("?")[0].removeprefix(self.base_url) or "/")

    def _backoff(self, failures: int) -> float:
        return random.uniform(0, min(BACKOFF_CAP, BACKOFF_FIRST * 2.0 ** (failures - 1)))

    def _back_off(self, failures: int, problem: str) -> None:
        if failures >= self.attempts:
            raise RetriableError(f"{self.source}: {problem} ({failures} attempts)")
        if self.wait(self._backoff(failures)):
            raise RetriableError(f"{self.source}: stopping")

    def _pause(self, seconds: float, path: str) -> None:
        if seconds > LONGEST_WAIT:
            raise RetriableError(
                f"{self.source}: rate limited on {self.where(path)} for {seconds:.0f} s",
                retry_after=seconds,
            )
        if self.wait(seconds):
            raise RetriableError(f"{self.source}: stopping")

    def _respect_budget(self, headers: Mapping[str, str], path: str) -> None:
        """When the source says the budget is spent, wait for it to refill."""
        remaining = headers.get("X-RateLimit-Remaining") or headers.get("ratelimit-remaining")
        if remaining is None or remaining.strip() not in ("0", "0.0"):
            return
        reset = headers.get("X-RateLimit-Reset") or headers.get("ratelimit-reset")
        if reset is None:
            return
        try:
            value = float(reset)
        except ValueError:
            return
        seconds = value - time.time() if value > 1e9 else value  # an epoch, or seconds
        if seconds > 0:
            self._pause(seconds, path)
