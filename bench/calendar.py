"""The business calendar beside businesstimedelta (PyPI), on the same pairs, in one run.

Calendar: Monday to Friday 09:00-17:00 in Europe/Berlin with Germany's public holidays.
Pairs: a start uniform over 2025-2026 (whole seconds) and an end a log-uniform 1 minute to
30 days later, the spans an SLA clock measures. For each pair both libraries answer
(a) the business seconds between start and end, and (b) start + N business seconds, with
N the answer to (a). businesstimedelta's "start + N" is the earliest instant at which N
business seconds have elapsed (for N = 0: the next open instant), which slamon answers with
``Calendar.reach`` (``Calendar.add`` for N = 0). slamon's deadline, ``Calendar.add``, is the
latest instant with the same business time: the same instant unless N runs out exactly at
a closing time, where the deadline is the next opening (a reply on Saturday to a target
that ran out at Friday 17:00 is still on time).

Then the case where businesstimedelta is wrong: a 24-hour calendar across DST nights.

Last line: ``calendar: <ratio>x faster than businesstimedelta, <n> disagreements on <N> pairs``
"""

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its calendar.py would stand in
# for the standard library's: put the repository there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import datetime as dt
import math
import random
import time
from zoneinfo import ZoneInfo

import businesstimedelta as btd
import holidays
import pytz

from rules import load_rules

UTC = dt.UTC
BERLIN = "Europe/Berlin"
YEARS = range(2024, 2030)


def slamon_calendar(hours: dict[str, str], dates: list[str] | None = None, country: bool = True):
    spec = {"name": "bench", "timezone": BERLIN, "hours": hours, "holidays": {}}
    if country:
        spec["holidays"]["country"] = "DE"
    if dates:
        spec["holidays"]["dates"] = dates
    return load_rules({"calendars": [spec]}).calendars["bench"]


def btd_rule(start: dt.time, end: dt.time, days: list[int], dates) -> btd.Rules:
    zone = pytz.timezone(BERLIN)
    work = btd.WorkDayRule(start_time=start, end_time=end, working_days=days, tz=zone)
    return btd.Rules([work, btd.HolidayRule(sorted(dates), tz=zone)])


def pairs(count: int, seed: int) -> list[tuple[dt.datetime, dt.datetime]]:
    rng = random.Random(seed)
    first = dt.datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for _ in range(count):
        start = first + dt.timedelta(seconds=rng.randrange(2 * 365 * 86400))
        span = math.exp(rng.uniform(math.log(60), math.log(30 * 86400)))
        out.append((start, start + dt.timedelta(seconds=int(span))))
    return out


def compare(count: int, seed: int) -> tuple[float, int]:
    calendar = slamon_calendar({"mon-fri": "09:00-17:00"})
    de = holidays.country_holidays("DE", years=YEARS)
    rule = btd_rule(dt.time(9), dt.time(17), [0, 1, 2, 3, 4], de.keys())
    work = pairs(count, seed)
    calendar.seconds_between(work[0][0].timestamp(), work[0][1].timestamp())  # table built

    began = time.process_time()
    ours = [calendar.seconds_between(a.timestamp(), b.timestamp()) for a, b in work]
    ours_after = [
        calendar.reach(a.timestamp(), n) if n > 0 else calendar.add(a.timestamp(), 0)
        for (a, _), n in zip(work, ours, strict=True)
    ]
    slamon_time = time.process_time() - began

    began = time.process_time()
    theirs = [rule.difference(a, b).timedelta.total_seconds() for a, b in work]
    theirs_after = [
        (btd.BusinessTimeDelta(rule, seconds=int(n)) + a).timestamp()
        for (a, _), n in zip(work, ours, strict=True)
    ]
    btd_time = time.process_time() - began

    disagreements = 0
    for i, (a, b) in enumerate(work):
        if ours[i] != theirs[i] or ours_after[i] != theirs_after[i]:
            disagreements += 1
            if disagreements <= 5:
                print(
                    f"  disagree: {a:%Y-%m-%d %H:%M:%S}Z..{b:%Y-%m-%d %H:%M:%S}Z "
                    f"between {ours[i]:.0f}/{theirs[i]:.0f}, "
                    f"after {ours_after[i]:.0f}/{theirs_after[i]:.0f}"
                )
    per_call = 1e6 / (2 * count)
    print(f"pairs: {count}, spans 1 minute to 30 days, 2025-2026, Mon-Fri 09-17 Berlin + DE")
    print(f"slamon:            {slamon_time:8.2f} s  ({slamon_time * per_call:8.2f} us a call)")
    print(f"businesstimedelta: {btd_time:8.2f} s  ({btd_time * per_call:8.2f} us a call)")
    return btd_time / slamon_time, disagreements


def dst_nights() -> None:
    """A 24-hour calendar across the DST nights, where the local day has 23 or 25 hours.
    businesstimedelta cannot express a day that ends at 24:00 (its best, 23:59:59.999999,
    drops a second a day), and its holidays last 24 hours rather than one local day."""
    zone = ZoneInfo(BERLIN)

    def midnight(day: str) -> float:
        return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), zone).timestamp()

    def next_day(day: str) -> str:
        return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()

    print("24-hour calendar in Europe/Berlin (truth: the UTC seconds from local midnight")
    print("to local midnight, less the holidays' local days):")
    cases = [
        ("the spring-forward day 2026-03-29", "2026-03-29", "2026-03-30", []),
        ("the fall-back day 2026-10-25", "2026-10-25", "2026-10-26", []),
        ("2026-03-28..30, holiday 2026-03-29", "2026-03-28", "2026-03-31", ["2026-03-29"]),
    ]
    for name, first, last, dates in cases:
        a, b = midnight(first), midnight(last)
        truth = b - a - sum(midnight(next_day(d)) - midnight(d) for d in dates)
        calendar = slamon_calendar({"mon-sun": "00:00-24:00"}, dates, country=False)
        ours = calendar.seconds_between(a, b)
        # businesstimedelta needs a holiday within five years of every instant it looks at
        closed = [dt.date.fromisoformat(d) for d in dates] + [dt.date(2027, 6, 1)]
        rule = btd_rule(dt.time(0), dt.time(23, 59, 59, 999999), list(range(7)), closed)
        start, end = dt.datetime.fromtimestamp(a, UTC), dt.datetime.fromtimestamp(b, UTC)
        theirs = rule.difference(start, end).timedelta.total_seconds()
        right = "slamon" if ours == truth else "neither" if theirs != truth else "btd"
        print(
            f"  {name}: truth {truth:.0f} s, slamon {ours:.0f} s, btd {theirs:.0f} s: {right} right"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    ratio, disagreements = compare(args.pairs, args.seed)
    dst_nights()
    print(
        f"calendar: {ratio:.0f}x faster than businesstimedelta, "
        f"{disagreements} disagreements on {args.pairs} pairs"
    )


if __name__ == "__main__":
    main()
