"""Property tests of rules.calendar.Calendar against a naive minute-stepping reference
(tests/rules/naive_calendar.py) and against its own algebra.

Instants are drawn around the DST switches and New Years of 2025-2027 in each zone (found by
probing zoneinfo, not by asking the engine), anywhere in those years, and now and then
anywhere in 1990-2044. The zones include 30/45-minute offsets (Kolkata, Kathmandu), the
southern hemisphere (Sydney) and a 30-minute DST shift (Lord Howe).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from functools import cache
from zoneinfo import ZoneInfo

import holidays as holidays_lib
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rules import Calendar, load_rules
from tests.rules.naive_calendar import NaiveCalendar

H = 3600
M = 60
DAY = 86400
FIRST, LAST = dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2028, 1, 1, tzinfo=dt.UTC)
WIDE_FIRST = int(dt.datetime(1990, 1, 1, tzinfo=dt.UTC).timestamp())
WIDE_LAST = int(dt.datetime(2045, 1, 1, tzinfo=dt.UTC).timestamp())

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hm(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * H + int(minutes) * M


def hours(*spans: str) -> list[tuple[int, int]]:
    return [(hm(span.split("-")[0]), hm(span.split("-")[1])) for span in spans]


def every_day(*spans: str) -> dict[int, list[tuple[int, int]]]:
    return {day: hours(*spans) for day in range(7)}


@cache
def german_holidays(years: tuple[int, ...]) -> frozenset[dt.date]:
    return frozenset(holidays_lib.country_holidays("DE", subdiv="BE", years=years).keys())


def german_source(years: range) -> Iterable[dt.date]:
    return german_holidays(tuple(years))


GERMAN = holidays_lib.country_holidays("DE", subdiv="BE")  # the reference: expands by itself
EXPLICIT = frozenset(
    {dt.date(2025, 11, 2), dt.date(2026, 3, 8), dt.date(2026, 12, 24), dt.date(2027, 1, 1)}
)

# name -> (zone, weekly hours, explicit holidays, German holidays?)
CALENDARS = {
    "berlin-office": (
        "Europe/Berlin",
        {day: hours("09:00-12:30", "13:30-18:00") for day in range(5)},
        frozenset(),
        True,
    ),
    "berlin-always": ("Europe/Berlin", every_day("00:00-24:00"), frozenset(), True),
    "berlin-nights": (
        "Europe/Berlin",
        {**every_day("01:00-04:00"), 6: hours("00:30-02:30", "23:00-24:00")},
        EXPLICIT,
        False,
    ),
    "new-york": (
        "America/New_York",
        {
            **{day: hours("09:00-12:30", "13:30-18:00") for day in range(5)},
            5: hours("22:00-24:00"),
            6: hours("00:00-03:00", "01:30-02:30"),  # overlapping: merged
        },
        EXPLICIT,
        False,
    ),
    "new-york-night": ("America/New_York", every_day("01:30-02:30"), frozenset(), False),
    "sydney": (
        "Australia/Sydney",
        {**every_day("01:00-04:00"), 0: hours("00:00-24:00"), 6: hours("00:00-24:00")},
        EXPLICIT,
        False,
    ),
    "sydney-office": (
        "Australia/Sydney",
        {day: hours("08:30-17:30") for day in range(5)},
        frozenset(),
        False,
    ),
    "kolkata": (
        "Asia/Kolkata",
        {day: hours("09:30-13:00", "14:00-18:30") for day in range(6)},
        EXPLICIT,
        False,
    ),
    "kathmandu": (
        "Asia/Kathmandu",
        {**{day: hours("10:00-17:00") for day in (0, 1, 2, 3, 4)}, 6: hours("10:00-17:00")},
        frozenset(),
        False,
    ),
    "lord-howe": ("Australia/Lord_Howe", every_day("01:45-02:45"), frozenset(), False),
}

ZONES = sorted({zone for zone, *_ in CALENDARS.values()} | {"UTC", "Pacific/Chatham"})


def engine_calendar(name: str) -> Calendar:
    zone, weekly, explicit, german = CALENDARS[name]
    return Calendar(
        name, zone, weekly, holidays=explicit, holiday_source=german_source if german else None
    )


@cache
def shared_calendar(name: str) -> Calendar:
    """One engine calendar per name for the whole module: its table grows as questions
    come in, the way a running service uses it."""
    return engine_calendar(name)


@cache
def reference(name: str) -> NaiveCalendar:
    zone, weekly, explicit, german = CALENDARS[name]
    closed = _Union(explicit, GERMAN) if german else explicit
    return NaiveCalendar(zone, weekly, closed)


class _Union:
    def __init__(self, *sets: object) -> None:
        self.sets = sets

    def __contains__(self, item: object) -> bool:
        return any(item in s for s in self.sets)  # type: ignore[operator]


# -- instants -----------------------------------------------------------------------------


@cache
def landmarks(zone: str) -> tuple[int, ...]:
    """UTC offset changes of ``zone`` in 2025-2027 (to the second) and its local New Year
    midnights, found by probing zoneinfo hour by hour."""
    tz = ZoneInfo(zone)

    def offset(t: int) -> dt.timedelta | None:
        return dt.datetime.fromtimestamp(t, tz).utcoffset()

    found = []
    t, end = int(FIRST.timestamp()), int(LAST.timestamp())
    while t < end:
        if offset(t) != offset(t + H):
            lo, hi = t, t + H
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
            found.append(hi)
        t += H
    for year in (2025, 2026, 2027):
        found.append(int(dt.datetime(year, 1, 1, tzinfo=tz).timestamp()))
    return tuple(sorted(found))


def instants(zone: str, spread_days: int = 3) -> st.SearchStrategy[float]:
    """Minute-aligned instants near a DST switch or New Year of ``zone``, or anywhere in
    2025-2027, or (less often) in 1990-2044; sometimes off the minute by some (quarter) seconds."""
    span = spread_days * DAY // M
    near = st.tuples(st.sampled_from(landmarks(zone)), st.integers(-span, span)).map(
        lambda p: p[0] // M * M + p[1] * M
    )
    anywhere = st.integers(int(FIRST.timestamp()) // M, int(LAST.timestamp()) // M - 1).map(
        lambda m: m * M
    )
    ever = st.integers(WIDE_FIRST // M, WIDE_LAST // M).map(lambda m: m * M)  # 1990-2044
    seconds = st.one_of(
        st.just(0), st.just(0), st.integers(1, 59), st.integers(1, 239).map(lambda q: q / 4)
    )
    return st.tuples(st.one_of(near, anywhere, near, anywhere, ever), seconds).map(sum)


@st.composite
def pair(draw: st.DrawFn, zone: str, max_days: int = 9) -> tuple[float, float]:
    """a <= b, at most ``max_days`` apart."""
    a = draw(instants(zone))
    b = a + draw(st.integers(0, max_days * DAY // M)) * M + draw(st.sampled_from([0, 0, 17]))
    return a, b


calendar_names = st.sampled_from(sorted(CALENDARS))


# -- the reference itself -------------------------------------------------------------------


def local(zone: str, *args: int, fold: int = 0) -> float:
    return dt.datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize("which", [reference, shared_calendar])
def test_hand_computed_dst_nights(which) -> None:
    """Known answers, so that the reference (and the engine) are held to more than each
    other."""
    ny = which("new-york-night")
    # fall back: 01:30-02:30 occurs 01:30-02:00 EDT, then 01:30-02:30 EST: 90 minutes
    day = local("America/New_York", 2025, 11, 2), local("America/New_York", 2025, 11, 3)
    assert ny.seconds_between(*day) == 90 * M
    # spring forward: 01:30-02:00 EST, then 03:00 EDT: 30 minutes
    day = local("America/New_York", 2025, 3, 9), local("America/New_York", 2025, 3, 10)
    assert ny.seconds_between(*day) == 30 * M
    assert ny.is_open(local("America/New_York", 2025, 11, 2, 1, 45, fold=1))
    assert not ny.is_open(local("America/New_York", 2025, 11, 2, 1, 15, fold=1))
    berlin = which("berlin-always")
    day = local("Europe/Berlin", 2025, 10, 26), local("Europe/Berlin", 2025, 10, 27)
    assert berlin.seconds_between(*day) == 25 * H
    day = local("Europe/Berlin", 2026, 3, 29), local("Europe/Berlin", 2026, 3, 30)
    assert berlin.seconds_between(*day) == 23 * H
    # 2025-12-25 and 26 are German holidays: Wed 24th, then Sat, Sun
    week = local("Europe/Berlin", 2025, 12, 22), local("Europe/Berlin", 2025, 12, 29)
    assert berlin.seconds_between(*week) == 5 * 24 * H
    office = which("berlin-office")
    assert office.seconds_between(*week) == 3 * 8 * H  # Mon-Wed, 8h a day
    # Lord Howe moves its clocks by 30 minutes at 02:00 local (2025-10-05): 01:45-02:45
    # wall time is 01:45-02:00 and 02:30-02:45 = 30 minutes
    lord_howe = which("lord-howe")
    day = local("Australia/Lord_Howe", 2025, 10, 5), local("Australia/Lord_Howe", 2025, 10, 6)
    assert lord_howe.seconds_between(*day) == 30 * M
    # and back at 02:00 (2026-04-05) to 01:30: 01:45-02:00 twice, then on to 02:45
    day = local("Australia/Lord_Howe", 2026, 4, 5), local("Australia/Lord_Howe", 2026, 4, 6)
    assert lord_howe.seconds_between(*day) == 75 * M
    kathmandu = which("kathmandu")  # 10:00 local is 04:15Z
    assert kathmandu.is_open(dt.datetime(2026, 1, 5, 4, 15, tzinfo=dt.UTC).timestamp())
    assert not kathmandu.is_open(dt.datetime(2026, 1, 5, 4, 14, tzinfo=dt.UTC).timestamp())


# -- agreement with the reference ---------------------------------------------------------


@SETTINGS
@given(data=st.data(), name=calendar_names)
def test_agrees_with_reference(data: st.DataObject, name: str) -> None:
    zone = CALENDARS[name][0]
    cal, ref = shared_calendar(name), reference(name)
    a, b = data.draw(pair(zone))
    assert cal.is_open(a) == ref.is_open(a)
    assert cal.is_open(b) == ref.is_open(b)
    assert cal.seconds_between(a, b) == ref.seconds_between(a, b)
    assert cal.seconds_between(b, a) == -ref.seconds_between(a, b)
    n = data.draw(st.integers(0, 3 * DAY) | st.sampled_from([0, 1, 59, 60, 3600]))
    assert cal.add(a, n) == ref.add(a, n)
    assert cal.reach(a, n) == ref.reach(a, n)


@SETTINGS
@given(data=st.data(), name=calendar_names)
def test_a_fresh_calendar_agrees_with_reference(data: st.DataObject, name: str) -> None:
    """A calendar whose first question is this one: its table has just been built around
    it, so instants near the table's edges (local New Years) are asked about first."""
    zone = CALENDARS[name][0]
    ref = reference(name)
    a, b = data.draw(pair(zone))
    n = data.draw(st.integers(0, 2 * DAY))
    question = data.draw(st.sampled_from(["between", "add", "reach"]))
    cal = engine_calendar(name)
    if question == "between":
        assert cal.seconds_between(b, a) == -ref.seconds_between(a, b)
    elif question == "add":
        assert cal.add(b, n) == ref.add(b, n)
    else:
        assert cal.reach(b, n) == ref.reach(b, n)


@st.composite
def weekly_hours(draw: st.DrawFn) -> dict[int, list[tuple[int, int]]]:
    """Random opening hours on a quarter-hour grid, some days closed, some 24:00 ends."""
    weekly: dict[int, list[tuple[int, int]]] = {}
    for day in range(7):
        points = draw(st.lists(st.integers(0, 96), min_size=0, max_size=6, unique=True))
        points = sorted(points)[: len(points) // 2 * 2]
        weekly[day] = [(a * 900, b * 900) for a, b in zip(points[::2], points[1::2], strict=True)]
    assume(any(weekly.values()))
    return weekly


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), zone=st.sampled_from(ZONES), weekly=weekly_hours())
def test_random_calendars_agree_with_reference(
    data: st.DataObject, zone: str, weekly: dict[int, list[tuple[int, int]]]
) -> None:
    a, b = data.draw(pair(zone, max_days=5))
    first = dt.datetime.fromtimestamp(a, ZoneInfo(zone)).date()
    shifts = data.draw(st.lists(st.integers(-1, 6), max_size=2))
    days = frozenset(first + dt.timedelta(days=d) for d in shifts)
    cal = Calendar("random", zone, weekly, holidays=days)
    ref = NaiveCalendar(zone, weekly, days)
    assert cal.is_open(a) == ref.is_open(a)
    assert cal.seconds_between(a, b) == ref.seconds_between(a, b)
    n = data.draw(st.integers(0, DAY))
    assume(ref.seconds_between(a, a + 14 * DAY) > n)  # keep the reference's walk short
    assert cal.add(a, n) == ref.add(a, n)
    assert cal.reach(a, n) == ref.reach(a, n)


def test_configured_berlin_calendar_agrees_with_reference() -> None:
    """The same calendar spelled in config (German holidays by country) — checked over
    whole weeks around Easter, Christmas and both DST switches of 2026."""
    rules = load_rules(
        {
            "calendars": [
                {
                    "name": "berlin",
                    "timezone": "Europe/Berlin",
                    "hours": {"mon-fri": ["09:00-12:30", "13:30-18:00"]},
                    "holidays": {"country": "DE", "dates": ["2026-12-24"]},
                }
            ],
            "policies": [{"name": "p", "calendar": "berlin", "targets": {"resolution": "1h"}}],
        }
    )
    cal = rules.calendars["berlin"]
    weekly = {day: hours("09:00-12:30", "13:30-18:00") for day in range(5)}
    ref = NaiveCalendar(
        "Europe/Berlin",
        weekly,
        _Union(holidays_lib.country_holidays("DE"), {dt.date(2026, 12, 24)}),
    )
    for month, day in [(3, 23), (3, 30), (10, 19), (10, 26), (12, 21), (12, 28), (4, 1)]:
        start = local("Europe/Berlin", 2026, month, day, 7)
        for step in range(0, 7 * DAY, 97 * M):
            assert cal.seconds_between(start, start + step) == ref.seconds_between(
                start, start + step
            )
            assert cal.add(start + step, 5 * H) == ref.add(start + step, 5 * H)


# -- the algebra --------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), name=calendar_names)
def test_additivity(data: st.DataObject, name: str) -> None:
    """between(a, b) + between(b, c) == between(a, c) in any order, also years apart."""
    zone = CALENDARS[name][0]
    cal = shared_calendar(name)
    far = st.integers(-3 * 365 * DAY, 3 * 365 * DAY)
    a = data.draw(instants(zone))
    b = a + data.draw(far | st.integers(-DAY, DAY))
    c = b + data.draw(far | st.integers(-DAY, DAY))
    assert cal.seconds_between(a, b) + cal.seconds_between(b, c) == cal.seconds_between(a, c)
    assert cal.seconds_between(a, a) == 0


@SETTINGS
@given(data=st.data(), name=calendar_names)
def test_add_inverts_between(data: st.DataObject, name: str) -> None:
    zone = CALENDARS[name][0]
    cal, ref = shared_calendar(name), reference(name)
    a, b = data.draw(pair(zone))
    elapsed = cal.seconds_between(a, b)
    assert cal.add(a, elapsed) == ref.first_open_at_or_after(b)
    assert cal.reach(a, elapsed) <= b
    if elapsed > 0:  # reach is the earliest: just before it, less has elapsed
        assert cal.seconds_between(a, cal.reach(a, elapsed) - 1) < elapsed


@SETTINGS
@given(data=st.data(), name=calendar_names)
def test_add_and_reach_land_on_the_target(data: st.DataObject, name: str) -> None:
    """Up to 30 business days ahead: exactly n business seconds have elapsed at both, add
    is open or an opening instant, and nothing more elapses between reach and add."""
    zone = CALENDARS[name][0]
    cal, ref = shared_calendar(name), reference(name)
    a = data.draw(instants(zone))
    n = data.draw(st.integers(0, 30 * DAY) | st.integers(0, 4 * H))
    late, early = cal.add(a, n), cal.reach(a, n)
    assert cal.seconds_between(a, late) == n
    assert cal.seconds_between(a, early) == n
    assert a <= early <= late
    assert cal.seconds_between(early, late) == 0
    assert ref.is_open(late)
    if late > a:  # the latest: a moment later, more than n has elapsed
        assert cal.seconds_between(a, late + 1) > n


@SETTINGS
@given(data=st.data(), name=calendar_names)
def test_monotonicity(data: st.DataObject, name: str) -> None:
    zone = CALENDARS[name][0]
    cal = shared_calendar(name)
    a, b = data.draw(pair(zone, max_days=40))
    c = b + data.draw(st.integers(0, 10 * DAY))
    assert 0 <= cal.seconds_between(a, b) <= cal.seconds_between(a, c)
    assert cal.seconds_between(a, c) >= cal.seconds_between(b, c)
    n = data.draw(st.integers(0, 10 * DAY))
    m = n + data.draw(st.integers(0, 10 * DAY))
    assert cal.add(a, n) <= cal.add(a, m)
    assert cal.reach(a, n) <= cal.reach(a, m)
    assert cal.add(a, n) <= cal.add(b, n)
    assert cal.reach(a, n) <= cal.reach(b, n)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=calendar_names,
    warm=st.lists(st.integers(2000, 2045), min_size=1, max_size=2),
    data=st.data(),
)
def test_answers_do_not_depend_on_earlier_questions(
    name: str, warm: list[int], data: st.DataObject
) -> None:
    """A calendar first asked about other years (so its table was built, grown or rebuilt
    around them) answers like a new one."""
    zone = CALENDARS[name][0]
    a, b = data.draw(pair(zone))
    n = data.draw(st.integers(0, 20 * DAY))
    fresh, used = engine_calendar(name), engine_calendar(name)
    for year in warm:
        t = dt.datetime(year, 6, 1, tzinfo=dt.UTC).timestamp()
        used.seconds_between(t, a)
        used.add(t, n)
    expected = (fresh.seconds_between(a, b), fresh.add(a, n), fresh.reach(a, n), fresh.is_open(b))
    assert (used.seconds_between(a, b), used.add(a, n), used.reach(a, n), used.is_open(b)) == (
        expected
    )


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(0, 3 * 365 * 86400),
    length=st.integers(0, 40 * 86400),
    target=st.integers(1, 30 * 8 * 3600),
    risk=st.one_of(st.none(), st.integers(0, 30 * 8 * 3600)),
)
def test_span_answers_what_the_three_questions_answer(start, length, target, risk):
    """``Calendar.span`` is the hot path's one look-up for three questions: it must give
    exactly their answers, also near the edge of the table it has built so far."""
    calendar = _berlin_office_for_span()
    a = 1_735_689_600 + start  # 2025-01-01
    b = a + length
    calendar.seconds_between(a, a)  # the table covers a's years: span's own look-up runs
    assert calendar.span(a, b, target, risk) == (
        calendar.seconds_between(a, b),
        calendar.add(a, target),
        None if risk is None else calendar.reach(a, risk),
    )


@functools.cache
def _berlin_office_for_span():
    from rules import load_rules

    spec = {"name": "o", "timezone": "Europe/Berlin", "holidays": {"country": "DE"},
            "hours": {"mon-fri": ["09:00-12:30", "13:30-18:00"], "sat": "10:00-14:00"}}  # fmt: skip
    return load_rules({"calendars": [spec]}).calendars["o"]
