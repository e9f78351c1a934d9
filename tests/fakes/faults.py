"""Faults on demand for the fakes of remote APIs, written once: planned answers for the
next requests to a path, a rate-limit window, and the Flask hooks that apply them.

A fake inherits :class:`Faults`, calls ``super().__init__()``, builds its app with
:meth:`Faults._flask` and supplies what is its API's own: how a request is logged
(:meth:`Faults._logged`), the rate-limited answer (:meth:`Faults._too_many`), the body of a
planned error (:meth:`Faults._failed`), its credential and other checks
(:meth:`Faults._check`) and headers on every answer (:meth:`Faults._headers`).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, g, request


class Faults:
    """Public state the tests read: ``faults`` (what is still planned), ``every`` and
    ``retry_after`` (the limit), ``served`` (requests in the current window), ``early``
    (requests that came before a Retry-After was over), ``limited`` (rate-limited answers),
    ``windows`` (budgets spent), ``log``."""

    WRITE_COST = 1  # of the budget, a request other than GET (Help Scout counts writes 2)
    lock: Any
    log: list[Any]
    credentials: set[str]

    def __init__(self) -> None:
        self.faults: list[tuple[str, list[int | str]]] = []
        self.every: int | None = None  # requests per rate-limit window
        self.retry_after = 1
        self.budget_headers = False  # the answer that spends the budget starts the wait
        self.served, self.blocked_until = 0, 0.0
        self.early = self.limited = self.windows = 0

    # -- what tests call -----------------------------------------------------------------

    def fail(self, path: str, *answers: int | str) -> None:
        """The next requests whose path contains ``path`` get these answers: an HTTP
        status, "truncate" (the real answer, cut in half) or "pass" (the real answer)."""
        self.faults.append((path, list(answers)))

    def limit(self, every: int, retry_after: int = 1) -> None:
        """Allow ``every`` requests per window; then the API's rate-limited answer with its
        wait until the window has passed."""
        self.every, self.retry_after = every, retry_after

    def revoke(self) -> None:
        """Every credential stops working."""
        self.credentials = set()

    # -- what a fake supplies ------------------------------------------------------------

    def _logged(self) -> Any:
        return request.full_path

    def _too_many(self, wait: float) -> Any:
        """The answer to a request over the budget; ``wait``: seconds the window has left."""
        raise NotImplementedError

    def _failed(self, status: int) -> Any:
        """The answer to a request a planned fault answers with ``status``."""
        raise NotImplementedError

    def _check(self) -> Any:
        """The API's own checks (credentials): an answer, or None to serve the request."""
        return None

    def _headers(self, response: Response) -> None:
        """Headers the API puts on every answer."""

    # -- the hooks -----------------------------------------------------------------------

    def _flask(self, name: str) -> Flask:
        app = Flask(name)
        app.before_request(self._before)
        app.after_request(self._after)
        return app

    def _before(self) -> Any:
        with self.lock:
            self.log.append(self._logged())
            wait = self._rate_limit(1 if request.method == "GET" else self.WRITE_COST)
            if wait is not None:
                return self._too_many(wait)
            status = self._fault()
            if status is not None:
                return self._failed(status)
        return self._check()

    def _after(self, response: Response) -> Response:
        self._headers(response)
        if g.get("truncate"):
            data = response.get_data()
            response.set_data(data[: len(data) // 2])
        return response

    def _fault(self) -> int | None:
        """The status a planned fault answers this request with; None for the real answer
        (nothing planned, "pass", or "truncate", which marks it to be cut)."""
        for path, answers in self.faults:
            if path in request.full_path and answers:
                answer = answers.pop(0)
                if answer == "truncate":
                    g.truncate = True
                return None if answer in ("pass", "truncate") else int(answer)
        return None

    def _rate_limit(self, cost: int) -> float | None:
        """None when the request is within the budget, else the seconds left to wait."""
        if self.every is None:
            return None
        now = time.monotonic()
        if now < self.blocked_until:
            self.early += 1
        elif self.served + cost <= self.every:
            self.served += cost
            if self.budget_headers and self.served >= self.every:
                self._block(now)
                g.budget_spent = True
            return None
        else:
            self._block(now)
        self.limited += 1
        return self.blocked_until - now

    def _block(self, now: float) -> None:
        self.served, self.blocked_until = 0, now + self.retry_after
        self.windows += 1
