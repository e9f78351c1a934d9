"""Durations as people write them in the config: ``90s``, ``30m``, ``4h``, ``1h30m``, ``3d``."""

from __future__ import annotations

import re

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([dhms])")
_WHOLE = re.compile(r"(?:\d+[dhms])+")


def parse_duration(text: str | int) -> int:
    """Seconds in a duration. A day is 24 hours of the calendar's time (business seconds
    under a business calendar). A bare integer means seconds."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {text}")
        return text
    if not isinstance(text, str):
        raise ValueError(f"not a duration: {text!r} (write it like 90s, 30m, 4h, 1h30m, 3d)")
    compact = text.strip().replace(" ", "")
    if not _WHOLE.fullmatch(compact):
        raise ValueError(f"not a duration: {text!r} (write it like 90s, 30m, 4h, 1h30m, 3d)")
    units = [unit for _, unit in _PART.findall(compact)]
    if len(set(units)) != len(units) or units != sorted(units, key=list(_UNITS).index):
        raise ValueError(f"not a duration: {text!r} (each unit once, largest first)")
    return sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))


def format_duration(seconds: int) -> str:
    """The shortest config spelling of a whole number of seconds (``5400`` → ``1h30m``)."""
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
