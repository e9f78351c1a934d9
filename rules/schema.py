"""The config schema of calendars and policies, and the rule set built from it.

The service's config schema (monitor/config.py) embeds these models; validation errors
come out as :class:`ConfigError` naming the offending key, e.g.
``policies[1].targets.first_response: not a duration: '4x'``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from rules.calendar import DAY, Calendar, Interval
from rules.durations import parse_duration
from rules.errors import ConfigError
from rules.events import CHANNELS, PRIORITIES, STATUSES
from rules.policies import DEFAULT_PAUSE_ON, METRICS, Policy, RuleSet, Warning

ALWAYS_OPEN = "24x7"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _duration(value: Any) -> int:
    return parse_duration(value)


Duration = Annotated[int, BeforeValidator(_duration)]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, (str, int)) else value


Names = Annotated[list[str], BeforeValidator(_as_list)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HolidaysSpec(_Strict):
    country: str | None = None
    subdivision: str | None = None
    dates: list[dt.date] = Field(default_factory=list)

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in holidays_lib.list_supported_countries():
            raise ValueError(f"no public holidays known for country {value!r}")
        return value.upper() if value else value


class CalendarSpec(_Strict):
    name: str
    timezone: str = "UTC"
    hours: dict[str, Annotated[list[str], BeforeValidator(_as_list)]]
    holidays: HolidaysSpec = Field(default_factory=HolidaysSpec)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)"
            ) from None
        return value

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        weekly_hours(value)
        return value


class MatchSpec(_Strict):
    connector: Names | None = None
    priority: Annotated[list[Literal[PRIORITIES]], BeforeValidator(_as_list)] | None = None  # type: ignore[valid-type]
    queue: Names | None = None
    channel: Annotated[list[Literal[CHANNELS]], BeforeValidator(_as_list)] | None = None  # type: ignore[valid-type]
    type: Names | None = None
    tags_any: Names | None = None
    tags_all: Names | None = None
    tags_none: Names | None = None
    organization: Names | None = None


class TargetsSpec(_Strict):
    first_response: Duration | None = None
    next_response: Duration | None = None
    periodic_update: Duration | None = None
    resolution: Duration | None = None


class PolicySpec(_Strict):
    name: str
    match: MatchSpec = Field(default_factory=MatchSpec)
    calendar: str = ALWAYS_OPEN
    targets: TargetsSpec
    warning: str | int = "80%"
    pause_on: Annotated[list[Literal[STATUSES]], BeforeValidator(_as_list)] = Field(  # type: ignore[valid-type]
        default_factory=lambda: sorted(DEFAULT_PAUSE_ON)
    )

    @field_validator("warning")
    @classmethod
    def _valid_warning(cls, value: str | int) -> str | int:
        parse_warning(value)
        return value

    @field_validator("targets")
    @classmethod
    def _some_target(cls, value: TargetsSpec) -> TargetsSpec:
        targets = value.model_dump(exclude_none=True)
        if not targets:
            raise ValueError(f"give at least one of {', '.join(METRICS)}")
        if any(seconds <= 0 for seconds in targets.values()):
            raise ValueError("a target must be longer than 0s")
        return value


class RulesSpec(_Strict):
    """The ``calendars:`` and ``policies:`` sections of a config."""

    calendars: list[CalendarSpec] = Field(default_factory=list)
    policies: list[PolicySpec] = Field(default_factory=list)


def parse_warning(value: str | int) -> Warning:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"not a percentage: {value!r}") from None
        if not 0 < share <= 1:
            raise ValueError(f"a warning share must be above 0% and at most 100%, not {value!r}")
        return Warning(share=share)
    return Warning(before=parse_duration(value))


def weekly_hours(hours: dict[str, list[str]]) -> dict[int, list[Interval]]:
    """``{"mon-fri": ["09:00-12:30", "13:30-18:00"], "sat": ["10:00-14:00"]}`` as
    weekday -> local (start, end) seconds."""
    weekly: dict[int, list[Interval]] = {}
    for key, spans in hours.items():
        days = _days(key)
        intervals = sorted(_interval(span) for span in spans)
        for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
            if start < end:
                raise ValueError(f"{key}: opening intervals overlap: {', '.join(spans)}")
        for day in days:
            if day in weekly:
                raise ValueError(f"{key}: {DAYS[day]} is given twice")
            weekly[day] = intervals
    if not any(weekly.values()):
        raise ValueError("a calendar needs opening hours on at least one day")
    return weekly


def _days(key: str) -> list[int]:
    days: list[int] = []
    for part in key.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"{key!r} is not a day or range of days (like mon-fri, sat, sun)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            raise ValueError(f"{key!r}: a range of days runs forwards, mon to sun")
        days.extend(range(a, b + 1))
    return days


def _interval(span: str) -> Interval:
    start, sep, end = str(span).replace(" ", "").partition("-")
    if not sep:
        raise ValueError(f"{span!r} is not an interval like 09:00-17:00")
    a, b = _seconds(start, span), _seconds(end, span)
    if not a < b:
        raise ValueError(f"{span!r} must end after it starts (use 24:00 for midnight)")
    return (a, b)


def _seconds(clock: str, span: str) -> int:
    found = _CLOCK.match(clock)
    if not found or (found.group(1) == "24" and found.group(2) != "00"):
        raise ValueError(f"{span!r}: {clock!r} is not a time like 09:00 (00:00 to 24:00)")
    seconds = int(found.group(1)) * 3600 + int(found.group(2)) * 60
    assert seconds <= DAY
    return seconds


def build_calendar(spec: CalendarSpec) -> Calendar:
    country, subdivision = spec.holidays.country, spec.holidays.subdivision

    def source(years: range) -> Iterable[dt.date]:
        if country is None:
            return ()
        return holidays_lib.country_holidays(country, subdiv=subdivision, years=years).keys()

    if country is not None:
        try:
            source(range(2000, 2001))
        except NotImplementedError:
            raise ConfigError(
                f"no subdivision {subdivision!r} in country {country}", key="holidays.subdivision"
            ) from None
    return Calendar(
        spec.name,
        spec.timezone,
        weekly_hours(spec.hours),
        holidays=spec.holidays.dates,
        holiday_source=source if country is not None else None,
    )


def build_rules(spec: RulesSpec) -> RuleSet:
    """Calendars and ordered policies from validated specs; cross-references checked."""
    calendars = {ALWAYS_OPEN: Calendar.always_open(ALWAYS_OPEN)}
    for i, cal in enumerate(spec.calendars):
        key = f"calendars[{i}]"
        if cal.name in calendars:
            raise ConfigError(
                f"calendar {cal.name!r} is defined twice (24x7 is built in)", key=f"{key}.name"
            )
        try:
            calendars[cal.name] = build_calendar(cal)
        except ConfigError as exc:
            raise ConfigError(exc.message, key=f"{key}.{exc.key}" if exc.key else key) from None
    policies: list[Policy] = []
    for i, pol in enumerate(spec.policies):
        key = f"policies[{i}]"
        if any(p.name == pol.name for p in policies):
            raise ConfigError(f"policy {pol.name!r} is defined twice", key=f"{key}.name")
        if pol.calendar not in calendars:
            known = ", ".join(sorted(calendars))
            raise ConfigError(
                f"no calendar named {pol.calendar!r} (known: {known})", key=f"{key}.calendar"
            )
        policies.append(
            Policy(
                name=pol.name,
                calendar=calendars[pol.calendar],
                targets=pol.targets.model_dump(exclude_none=True),
                match={k: frozenset(v) for k, v in pol.match.model_dump(exclude_none=True).items()},
                warning=parse_warning(pol.warning),
                pause_on=frozenset(pol.pause_on),
            )
        )
    return RuleSet(policies=tuple(policies), calendars=calendars)


def load_rules(raw: dict[str, Any]) -> RuleSet:
    """Validate raw ``calendars``/``policies`` data (as parsed from YAML) and build."""
    try:
        spec = RulesSpec.model_validate(raw)
    except ValidationError as exc:
        raise config_errors(exc)[0] from None
    return build_rules(spec)


def config_errors(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[ConfigError]:
    """Pydantic's errors as ConfigErrors naming keys the way the config spells them."""
    out = []
    for err in exc.errors():
        loc = [*prefix, *err["loc"]]
        key = key_path(loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif err["type"] == "literal_error":
            message = f"{err.get('input')!r}: {message.lower()}"
        out.append(ConfigError(message, key=key))
    return out


def key_path(loc: Sequence[str | int]) -> str:
    """``("policies", 1, "targets", "resolution")`` → ``policies[1].targets.resolution``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-"):
            out += f".{part}" if out else str(part)
    return out
