"""Keeping secrets out of everything slamon says: every configured secret is replaced by
``***`` in error text before it is logged, stored or shown."""

from __future__ import annotations

from collections.abc import Iterable


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        # longest first, so a secret containing another is replaced whole
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text
