"""OAuth2 access tokens for REST sources, written once: a grant posted as a form to the
token endpoint (client credentials, or a refresh token that does not rotate), the access
token kept until a minute before ``expires_in`` runs out, one renewal when an API answers
401, and the token added to the session's secrets so no message carries it.

A refused grant (by default HTTP 400, 401 or 403, with the OAuth2 ``error`` code when there
is one) and a fresh token refused again are :class:`FatalError`; a malformed answer from
the token endpoint is a :class:`RetriableError`. No message names a secret: ``client``
describes the credentials by their public part (a client or app id).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import requests

from connectors.base import FatalError, RetriableError
from connectors.http import Http

MARGIN = 60.0  # seconds before expiry a token is renewed
REFUSED = (400, 401, 403)  # RFC 6749 5.2: invalid_grant/invalid_request 400, invalid_client 401


class AccessToken:
    """One source's access token. ``client`` and ``advice`` word its errors:
    "<source>: the token endpoint refused <client> (HTTP 400 invalid_grant); <advice>"."""

    def __init__(
        self,
        source: str,
        token_url: str,
        form: Mapping[str, str],
        *,
        client: str,
        advice: str,
        refused: Collection[int] = REFUSED,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source, self.url, self.form = source, token_url, dict(form)
        self.client, self.advice, self.refused = client, advice, tuple(refused)
        self._monotonic = monotonic
        self.value: str | None = None
        self.expires = 0.0
        self.fetched = 0  # tokens asked for

    def header(self, http: Http, renew: bool = False) -> dict[str, str]:
        """The Authorization header, with a new token when renewing or none is valid."""
        if renew or self.value is None or self._monotonic() >= self.expires:
            self._fetch(http)
        return {"Authorization": f"Bearer {self.value}"}

    def get(
        self,
        http: Http,
        path: str,
        params: Any = None,
        allow: Collection[int] = (),
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """A GET with the token: a success or a status in ``allow``. A 401 gets one new
        token; refused again, it is a :class:`FatalError`."""
        for renew in (False, True):
            sent = {**(headers or {}), **self.header(http, renew)}
            response = http.request("GET", path, params=params, headers=sent,
                                    allow=(401, *allow), **kwargs)  # fmt: skip
            if response.status_code != 401:
                return response
        raise FatalError(self.denied(http, path, 401))

    def denied(self, http: Http, path: str, status: int) -> str:
        """The message for an API refusing a fresh token."""
        return (
            f"{self.source}: {http.where(path)} refused the access token of {self.client} "
            f"(HTTP {status}); {self.advice}"
        )

    def _fetch(self, http: Http) -> None:
        self.value = None
        asked = self._monotonic()
        response = http.request("POST", self.url, data=self.form, allow=self.refused)
        status = response.status_code
        if status == 404:  # only when a source lists it in ``refused``
            raise FatalError(f"{self.source}: no token endpoint at {http.url(self.url)}")
        if status in self.refused:
            raise FatalError(
                f"{self.source}: the token endpoint refused {self.client} "
                f"(HTTP {status}{_reason(response)}); {self.advice}"
            )
        try:
            body = response.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in") or 0)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RetriableError(
                f"{self.source}: a malformed answer from the token endpoint"
            ) from None
        self.value, self.fetched = token, self.fetched + 1
        self.expires = asked + max(0.0, lifetime - MARGIN)
        http.secrets = sorted({*http.secrets, token}, key=len, reverse=True)


def _reason(response: requests.Response) -> str:
    """`` invalid_grant``: the OAuth2 error code of a refusal (short, never a secret)."""
    try:
        reason = str(response.json().get("error", ""))[:40]
    except (ValueError, AttributeError):
        return ""
    return f" {reason}" if reason else ""
