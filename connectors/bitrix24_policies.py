"""The targets and working time each Open Line defines, as slamon ``calendars:`` and
``policies:`` YAML (HELPDESK-APIS.md, "Bitrix24 REST API" §4.7).

Per line, from ``imopenlines.config.list.get``: ``KPI_FIRST_ANSWER_TIME`` and
``KPI_FURTHER_ANSWER_TIME`` (seconds; ``0`` = no KPI) become the ``first_response`` and
``next_response`` targets; ``WORKTIME_*`` the line's calendar: every day but
``WORKTIME_DAYOFF`` (``MO``…``SU``), from ``WORKTIME_FROM`` to ``WORKTIME_TO`` (``HH:MM``, or
as the portal answers, ``9``, ``18.30``, ``0``, ``23.59``; ``23.59`` is the end of the day),
in ``WORKTIME_TIMEZONE``, with ``WORKTIME_HOLIDAYS`` (``DD.MM``, every year) as dates of this
year and the next. A line with working time off is open around the clock (``24x7``). A line
with no KPI has nothing to carry over and gets no policy; a line with CRM integration off
is not watched, so a policy for it would match nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from rules.durations import format_duration

DAYS = {"MO": "mon", "TU": "tue", "WE": "wed", "TH": "thu", "FR": "fri", "SA": "sat",
        "SU": "sun"}  # fmt: skip
_TIME = re.compile(r"^\s*(\d{1,2})(?:[:.](\d{1,2}))?\s*$")


def suggested_policies(connector: str, lines: Iterable[Mapping[str, Any]], today: dt.date) -> str:
    """The YAML, with a comment naming what was left out and why."""
    calendars: list[dict[str, Any]] = []
    policies: list[dict[str, Any]] = []
    remarks: list[str] = []
    for line in lines:
        lid, name = str(line.get("ID")), str(line.get("LINE_NAME") or line.get("ID"))
        label = f"line {lid} ({name})"
        if str(line.get("CRM")) != "Y":
            remarks.append(f"{label}: CRM integration is off, its sessions cannot be read")
            continue
        targets = {metric: _duration(line.get(key)) for metric, key in (
            ("first_response", "KPI_FIRST_ANSWER_TIME"),
            ("next_response", "KPI_FURTHER_ANSWER_TIME"))}  # fmt: skip
        targets = {k: v for k, v in targets.items() if v}
        if not targets:
            remarks.append(f"{label}: no first or further answer KPI set")
            continue
        policy_name = f"{connector}-line-{lid}"
        calendar, problem = _calendar(policy_name, line, today)
        if problem:
            remarks.append(f"{label}: {problem}; its policy runs around the clock")
        if calendar is not None:
            calendars.append(calendar)
        policies.append({
            "name": policy_name,
            "match": {"connector": [connector], "queue": [name]},
            "calendar": calendar["name"] if calendar else "24x7",
            "targets": targets,
        })  # fmt: skip
    head = [f"# Targets and working time of the Open Lines of {connector!r}, read from Bitrix24."]
    head += [f"# Left out: {r}." for r in remarks]
    body = yaml.safe_dump({"calendars": calendars, "policies": policies}, allow_unicode=True,
                          sort_keys=False, default_flow_style=None, width=100)  # fmt: skip
    return "\n".join(head) + "\n" + body


def _duration(value: Any) -> str | None:
    """KPI seconds as a slamon duration (``90s``, ``5m``, ``1h30m``); 0 or junk: none."""
    try:
        seconds = int(float(str(value or 0)))
    except ValueError:
        return None
    return format_duration(seconds) if seconds > 0 else None


def _calendar(
    name: str, line: Mapping[str, Any], today: dt.date
) -> tuple[dict[str, Any] | None, str]:
    """The line's working time as a calendar (None: always open), and a problem if its
    settings could not be read."""
    if str(line.get("WORKTIME_ENABLE")) != "Y":
        return None, ""
    zone = str(line.get("WORKTIME_TIMEZONE") or "")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return None, f"unknown working-time zone {zone!r}"
    start, end = _clock(line.get("WORKTIME_FROM")), _clock(line.get("WORKTIME_TO"))
    if start is None or end is None or start == end:
        return None, "working hours not readable"
    if start < end:
        spans = [f"{_hhmm(start)}-{_hhmm(end)}"]
    else:  # past midnight
        spans = ([f"00:00-{_hhmm(end)}"] if end else []) + [f"{_hhmm(start)}-24:00"]
    off = {str(d).strip().upper() for d in _items(line.get("WORKTIME_DAYOFF"))}
    days = [day for code, day in DAYS.items() if code not in off]
    if not days:
        return None, "every day is a day off"
    holidays = []
    for text in _items(line.get("WORKTIME_HOLIDAYS")):
        found = re.fullmatch(r"\s*(\d{1,2})\.(\d{1,2})\s*", str(text))
        for year in (today.year, today.year + 1):
            try:
                day = dt.date(year, int(found[2]), int(found[1])) if found else None
            except ValueError:  # 29.02 in a common year
                day = None
            if day is not None:
                holidays.append(day.isoformat())
    calendar: dict[str, Any] = {"name": name, "timezone": zone,
                                "hours": {key: list(spans) for key in _ranges(days)}}  # fmt: skip
    if holidays:
        calendar["holidays"] = {"dates": sorted(set(holidays))}
    return calendar, ""


def _ranges(days: list[str]) -> list[str]:
    """Working days as the config writes them: ``mon-fri``, ``sun``."""
    order = list(DAYS.values())
    runs: list[list[str]] = []
    for day in days:
        if runs and order.index(runs[-1][-1]) + 1 == order.index(day):
            runs[-1].append(day)
        else:
            runs.append([day])
    return [run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs]


def _items(value: Any) -> list[str]:
    """A list setting: a list, or ``DD.MM,DD.MM`` as written; ``[""]`` is empty."""
    values = value if isinstance(value, list) else str(value or "").split(",")
    return [str(v).strip() for v in values if str(v).strip()]


def _clock(value: Any) -> int | None:
    """Minutes after midnight of ``9``, ``18.30``, ``09:00``; ``23.59`` is 24:00."""
    found = _TIME.match(str(value if value is not None else ""))
    if not found:
        return None
    hours, minutes = int(found[1]), int(found[2] or 0)
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        return None
    total = hours * 60 + minutes
    return 24 * 60 if total == 23 * 60 + 59 else total


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
