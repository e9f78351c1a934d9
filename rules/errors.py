"""The errors that cross module lines."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem, named by its key path (``policies[1].targets.resolution``).

    The rules engine knows keys only; whoever loaded the file fills in ``path`` and
    ``line`` so the message reads ``PATH:LINE: key: message``.
    """

    def __init__(
        self, message: str, key: str = "", path: str | None = None, line: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.path = path
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line if self.line is not None else 0}: "
        what = f"{self.key}: " if self.key else ""
        return f"{where}{what}{self.message}"
