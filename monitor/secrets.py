"""Keeping secrets out of everything slamon says: every configured secret is replaced by
``***`` in error text before it is logged, stored or shown.

Some secrets are not in the config: a token the source rotates (Bitrix24's OAuth refresh
token) is only known once a sync has run. :meth:`Redactor.watch` adds a source (each
connector's ``secrets_in_use``) asked for the values in use at each redaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)


def _ordered(secrets: Iterable[str]) -> list[str]:
    # longest first, so a secret containing another is replaced whole
    return sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = _ordered(secrets)
        self._sources: list[Callable[[], Iterable[str]]] = []

    def watch(self, source: Callable[[], Iterable[str]]) -> None:
        """Ask ``source`` for the secrets in use whenever text is redacted."""
        self._sources.append(source)

    def __call__(self, text: str) -> str:
        secrets = self.secrets
        for source in list(self._sources):
            try:
                current = list(source())
            except Exception:  # a source's failure must not stop a log line
                log.debug("a secret source failed")
                continue
            if any(s and len(s) >= 4 and s not in secrets for s in current):
                secrets = _ordered([*secrets, *current])
        for secret in secrets:
            text = text.replace(secret, "***")
        return text
