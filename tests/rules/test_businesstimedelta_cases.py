"""Where businesstimedelta (the usual Python library for business time) is wrong and the
calendar is right: a 24-hour calendar across DST nights in Europe/Berlin.

The truth needs no business-time library: with every hour open, the business seconds from
local midnight to local midnight are the UTC seconds between them, less the local days of
the holidays. businesstimedelta cannot express a day that ends at 24:00 (its closest,
23:59:59.999999, loses a second a day) and its holidays last 24 hours, not one local day,
so a holiday on the 23-hour spring-forward day eats an hour of the day after.
"""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from rules import load_rules

BERLIN = ZoneInfo("Europe/Berlin")


def midnight(day: str) -> float:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), BERLIN).timestamp()


CASES = [
    # (first local day, day after the last, holidays, truth, businesstimedelta's answer)
    ("2026-03-29", "2026-03-30", [], 23 * 3600, 23 * 3600 - 1),
    ("2026-10-25", "2026-10-26", [], 25 * 3600, 25 * 3600 - 1),
    # 28th (24h) + 30th (24h); the holiday's 23 hours are closed
    ("2026-03-28", "2026-03-31", ["2026-03-29"], 48 * 3600, 48 * 3600 - 3600 - 1),
]


def all_day(dates: list[str]):
    spec = {"name": "all-day", "timezone": "Europe/Berlin", "hours": {"mon-sun": "00:00-24:00"}}
    spec["holidays"] = {"dates": dates}
    return load_rules({"calendars": [spec]}).calendars["all-day"]


@pytest.mark.parametrize(("first", "after", "dates", "truth", "_"), CASES)
def test_calendar_gives_the_truth(first, after, dates, truth, _):
    a, b = midnight(first), midnight(after)
    holidays = sum(
        midnight((dt.date.fromisoformat(d) + dt.timedelta(days=1)).isoformat()) - midnight(d)
        for d in dates
    )
    assert b - a - holidays == truth  # the truth, from the time zone database alone
    calendar = all_day(dates)
    assert calendar.seconds_between(a, b) == truth
    assert calendar.add(a, truth) == b  # and back: the first open instant at or after b


@pytest.mark.parametrize(("first", "after", "dates", "truth", "wrong"), CASES)
def test_businesstimedelta_is_wrong_there(first, after, dates, truth, wrong):
    btd = pytest.importorskip("businesstimedelta")
    pytz = pytest.importorskip("pytz")
    zone = pytz.timezone("Europe/Berlin")
    closed = [dt.date.fromisoformat(d) for d in dates] + [dt.date(2027, 6, 1)]
    rule = btd.Rules(
        [
            btd.WorkDayRule(dt.time(0), dt.time(23, 59, 59, 999999), list(range(7)), tz=zone),
            btd.HolidayRule(closed, tz=zone),
        ]
    )
    a = dt.datetime.fromtimestamp(midnight(first), dt.UTC)
    b = dt.datetime.fromtimestamp(midnight(after), dt.UTC)
    assert rule.difference(a, b).timedelta.total_seconds() == wrong != truth
