"""Calling a Bitrix24 portal (HELPDESK-APIS.md, "Bitrix24 REST API" §1-§3): the webhook URL
or OAuth (an ``expired_token`` refreshes once and the call is repeated), a client-side leaky
bucket so a normal sync never meets ``QUERY_LIMIT_EXCEEDED``, Bitrix24's
``{"error","error_description"}`` answers sorted by code, a method paused by
``OPERATION_TIME_LIMIT`` (the others go on), list paging and ``batch``.

Transport, retries and backoff are the shared :class:`~connectors.http.Http`'s: this module
only gives it a session that waits for the bucket and reads Bitrix24's error codes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import requests

from connectors.base import FatalError, RetriableError
from connectors.http import Http

PAGE = 50  # IRestService::LIST_LIMIT
SESSION, EMAIL = "IMOPENLINES_SESSION", "CRM_EMAIL"
LIST, HISTORY = "crm.activity.list", "imopenlines.session.history.get"
LINES, CALLS = "imopenlines.config.list.get", "voximplant.statistic.get"
SELECT = ["ID", "OWNER_TYPE_ID", "OWNER_ID", "PROVIDER_ID", "PROVIDER_TYPE_ID",
          "ASSOCIATED_ENTITY_ID", "ORIGIN_ID", "SUBJECT", "CREATED", "LAST_UPDATED",
          "START_TIME", "END_TIME", "COMPLETED", "DIRECTION", "RESPONSIBLE_ID",
          "RESULT_STATUS", "RESULT_SOURCE_ID", "PROVIDER_PARAMS", "COMMUNICATIONS"]  # fmt: skip
BATCH_MAX = 50
RATE, BURST = 2.0, 40.0  # below the portal's 2/s, 50: other clients share the bucket
PAUSE = 60.0  # a paused method waits this long when the portal names no reset time
OAUTH_SERVER = "https://oauth.bitrix.info/oauth/token/"
REFUSED = {"NO_AUTH_FOUND", "INVALID_CREDENTIALS", "insufficient_scope", "ACCESS_DENIED",
           "user_access_error", "invalid_token", "PORTAL_DELETED", "ERROR_METHOD_NOT_FOUND",
           "PAYMENT_REQUIRED", "invalid_grant", "invalid_client"}  # fmt: skip


class _Scrub(logging.Filter):
    """urllib3 logs each request line at DEBUG, and a webhook URL's path holds its code:
    take the secrets out of those records."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(secret in text for secret in self.secrets):
            for secret in sorted(self.secrets, key=len, reverse=True):
                text = text.replace(secret, "***")
            record.msg, record.args = text, ()
        return True


_SCRUB = _Scrub()
logging.getLogger("urllib3.connectionpool").addFilter(_SCRUB)


class MethodPaused(RetriableError):
    """A method is over its operation time limit (429): skip what needs it this poll."""

    def __init__(self, method: str, seconds: float) -> None:
        super().__init__(
            f"bitrix24: {method} is paused by the portal's operation time limit",
            retry_after=seconds,
            status=429,
        )
        self.method = method


class _Expired(Exception):
    """An OAuth access token ran out (401 expired_token)."""


class Bucket:
    """The portal's leaky bucket mirrored on our side: each request adds one, ``rate``
    drain a second; a request that would overflow ``burst`` waits."""

    def __init__(self, rate: float, burst: float, stop: threading.Event) -> None:
        self.rate, self.burst, self.stop = rate, burst, stop
        self.level, self.at = 0.0, time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> None:
        with self.lock:
            now = time.monotonic()
            self.level = max(0.0, self.level - (now - self.at) * self.rate)
            self.at = now
            wait = (self.level + 1 - self.burst) / self.rate
            if wait > 0 and self.stop.wait(wait):
                raise RetriableError("bitrix24: stopping")
            self.level += 1

    def fill(self) -> None:
        """The portal said its bucket is full: ours is too."""
        with self.lock:
            self.level, self.at = self.burst, time.monotonic()


class _Session(requests.Session):
    """Waits for the bucket before each request and turns Bitrix24's error answers into
    the connector's errors; 503 and other 5xx go back to Http, which backs off."""

    def __init__(self, bucket: Bucket, scrub: Callable[[str], str]) -> None:
        super().__init__()
        self.bucket, self.scrub = bucket, scrub
        self.limited = 0  # QUERY_LIMIT_EXCEEDED answers seen

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.bucket.take()
        response = super().request(method, url, *args, **kwargs)
        if response.status_code < 400:
            return response
        name = str(url).split("?")[0].rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
        try:
            body = response.json()
        except ValueError:
            body = {}
        code = str(body.get("error") or "") if isinstance(body, dict) else ""
        text = self.scrub(str(body.get("error_description") or ""))[:200] if code else ""
        if code == "QUERY_LIMIT_EXCEEDED":
            self.limited += 1
            self.bucket.fill()
            return response
        if code == "OPERATION_TIME_LIMIT":
            raise MethodPaused(name, PAUSE)
        if code == "expired_token":
            raise _Expired()
        if response.status_code >= 500 and code not in REFUSED:
            return response
        problem = f"bitrix24: {name} answered {code or 'HTTP ' + str(response.status_code)}"
        problem += f": {text}" if text else ""
        if code in REFUSED or response.status_code in (401, 403):
            raise FatalError(problem)
        raise RetriableError(problem, status=response.status_code)


class Portal:
    """One sync's connection to the portal."""

    def __init__(
        self,
        base: str,
        stop: threading.Event,
        secrets: list[str],
        oauth: Mapping[str, str] | None,
        oauth_url: str,
        rate: float,
        burst: float,
    ) -> None:
        self.bucket = Bucket(rate, burst, stop)
        _SCRUB.secrets.update(s for s in [*secrets, *(oauth or {}).values()] if len(s) >= 4)
        hidden = [*secrets, (oauth or {}).get("refresh_token", "")]
        self.http = Http("bitrix24", base, stop, secrets=hidden)
        self.http.session = _Session(self.bucket, self.http.scrub)
        self.http.session.headers["User-Agent"] = "slamon (+https://github.com/slamon)"
        self.oauth = dict(oauth) if oauth else None  # client_id, client_secret, refresh_token
        self.oauth_url = oauth_url
        self.access = ""
        self.paused: dict[str, float] = {}

    @property
    def limited(self) -> int:
        session = self.http.session
        return session.limited if isinstance(session, _Session) else 0

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One method call's envelope (``result``, ``next``, ``total``, ``time``)."""
        until = self.paused.get(method, 0.0)
        if until > time.monotonic():
            raise MethodPaused(method, until - time.monotonic())
        body = dict(params or {})
        for attempt in (1, 2):
            if self.oauth is not None:
                if not self.access:
                    self.refresh()
                body["auth"] = self.access
            try:
                answer = self.http.json("POST", f"{method}.json", json=body)
            except MethodPaused:
                self.paused[method] = time.monotonic() + PAUSE
                raise
            except _Expired:
                if self.oauth is None or attempt == 2:
                    raise FatalError(
                        f"bitrix24: {method}: the access token expired again"
                    ) from None
                self.access = ""
                continue
            if not isinstance(answer, dict) or "result" not in answer:
                raise RetriableError(f"bitrix24: {method} answered without a result")
            return answer
        raise AssertionError("unreachable")

    def refresh(self) -> None:
        """A new access token (and a new refresh token, which the cursor keeps)."""
        assert self.oauth is not None
        params = {"grant_type": "refresh_token", **self.oauth}
        answer = self.http.get(self.oauth_url, **params)
        if not isinstance(answer, dict) or not answer.get("access_token"):
            raise FatalError("bitrix24: the OAuth server gave no access token")
        self.access = str(answer["access_token"])
        self.oauth["refresh_token"] = str(
            answer.get("refresh_token") or self.oauth["refresh_token"]
        )
        self.http.secrets = sorted({*self.http.secrets, self.access, self.oauth["refresh_token"]},
                                   key=len, reverse=True)  # fmt: skip
        _SCRUB.secrets.update((self.access, self.oauth["refresh_token"]))

    def pages(self, method: str, params: Mapping[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """Every page of a list method by ``start`` offsets."""
        start = 0
        while True:
            answer = self.call(method, {**params, "start": start})
            yield rows(answer["result"], method)
            following = answer.get("next")
            if not isinstance(following, int) or following <= start:
                return
            start = following

    def batch(
        self, commands: Mapping[str, tuple[str, Mapping[str, Any]]]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Results of up to 50 calls a request; a command in ``result_error`` is tried
        again alone. Returns the results and, by key, the errors that stayed (codes)."""
        results: dict[str, Any] = {}
        failed: dict[str, str] = {}
        keys = list(commands)
        for i in range(0, len(keys), BATCH_MAX):
            chunk = {k: commands[k] for k in keys[i : i + BATCH_MAX]}
            cmd = {k: f"{m}?{php_query(p)}" for k, (m, p) in chunk.items()}
            answer = self.call("batch", {"halt": 0, "cmd": cmd})["result"]
            inner = answer.get("result") if isinstance(answer, dict) else None
            done = inner if isinstance(inner, dict) else {}
            for key, (method, params) in chunk.items():
                if key in done:
                    results[key] = done[key]
                    continue
                try:  # retried alone; a paused method pauses the caller
                    results[key] = self.call(method, params)["result"]
                except RetriableError as exc:
                    if isinstance(exc, MethodPaused) or exc.status is None:
                        raise
                    failed[key] = str(exc)
        return results, failed


def php_query(params: Mapping[str, Any], prefix: str = "") -> str:
    """Parameters as a PHP query string (``filter[>ID]=5&select[]=ID``), as ``batch``
    commands carry them."""
    parts: list[str] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            parts.append(php_query(value, name))
        elif isinstance(value, list | tuple):
            parts += [f"{quote(name + '[]', safe='[]')}={quote(str(v), safe='')}" for v in value]
        else:
            parts.append(f"{quote(name, safe='[]')}={quote(str(value), safe='')}")
    return "&".join(p for p in parts if p)


def rows(result: Any, method: str) -> list[dict[str, Any]]:
    if isinstance(result, dict) and not result:
        return []
    if not isinstance(result, list):
        raise RetriableError(f"bitrix24: {method} answered without a list")
    return [row for row in result if isinstance(row, dict)]
