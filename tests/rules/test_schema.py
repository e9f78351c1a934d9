"""Config of calendars and policies: what is accepted, and errors that name the key."""

import datetime as dt

import pytest

from rules import ConfigError, format_duration, load_rules, parse_duration
from rules.policies import Warning
from rules.schema import parse_warning, weekly_hours

H = 3600


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("4h", 4 * H),
        ("1h30m", 5400),
        ("3d", 3 * 86400),
        ("1d2h3m4s", 86400 + 2 * H + 184),
        (" 2h ", 7200),
        (45, 45),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "4x", "h", "1.5h", "30m1h", "1h1h", "-5m", True, None, -1])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0, 59, 60, 5400, 86400, 90061, 30 * 86400])
def test_format_duration_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


def test_weekly_hours_split_shifts_ranges_and_midnight():
    weekly = weekly_hours(
        {"mon-fri": ["09:00-12:30", "13:30-18:00"], "sat": ["10:00-14:00"], "sun": ["20:00-24:00"]}
    )
    assert weekly[0] == [(9 * H, 12 * H + 1800), (13 * H + 1800, 18 * H)]
    assert weekly[4] == weekly[0]
    assert weekly[5] == [(10 * H, 14 * H)]
    assert weekly[6] == [(20 * H, 24 * H)]


def test_warning_share_or_duration():
    assert parse_warning("80%") == Warning(share=0.8)
    assert parse_warning("15m") == Warning(before=900)
    assert Warning(share=0.8).threshold(3600) == 2880
    assert Warning(before=900).threshold(3600) == 2700
    assert Warning(before=7200).threshold(3600) == 0


def _error(raw) -> str:
    with pytest.raises(ConfigError) as caught:
        load_rules(raw)
    return str(caught.value)


CAL = {"name": "office", "timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"policies": [{"name": "p", "targets": {"first_response": "4x"}}]},
            "policies[0].targets.first_response: not a duration: '4x'",
        ),
        (
            {"policies": [{"name": "p", "targets": {"first_reply": "4h"}}]},
            "policies[0].targets.first_reply: unknown key 'first_reply'",
        ),
        ({"policies": [{"name": "p", "targets": {}}]}, "policies[0].targets: give at least one"),
        (
            {"policies": [{"name": "p", "targets": {"resolution": "0s"}}]},
            "policies[0].targets: a target must be longer than 0s",
        ),
        ({"policies": [{"targets": {"resolution": "1d"}}]}, "policies[0].name: required key"),
        (
            {"policies": [{"name": "p", "calendar": "nope", "targets": {"resolution": "1d"}}]},
            "policies[0].calendar: no calendar named 'nope'",
        ),
        (
            {"policies": [{"name": "p", "targets": {"resolution": "1d"}, "warning": "120%"}]},
            "policies[0].warning: a warning share must be above 0% and at most 100%",
        ),
        (
            {
                "policies": [
                    {"name": "p", "match": {"priority": "hgh"}, "targets": {"resolution": "1d"}}
                ]
            },
            "policies[0].match.priority[0]: 'hgh'",
        ),
        (
            {
                "policies": [
                    {"name": "p", "match": {"prio": "high"}, "targets": {"resolution": "1d"}}
                ]
            },
            "policies[0].match.prio: unknown key 'prio'",
        ),
        (
            {"policies": [{"name": "p", "pause_on": ["waiting"], "targets": {"resolution": "1d"}}]},
            "policies[0].pause_on[0]: 'waiting'",
        ),
        (
            {"policies": [{"name": "p", "targets": {"resolution": "1d"}}] * 2},
            "policies[1].name: policy 'p' is defined twice",
        ),
        (
            {"calendars": [{**CAL, "timezone": "Europe/Berln"}]},
            "calendars[0].timezone: unknown time zone 'Europe/Berln'",
        ),
        (
            {"calendars": [{**CAL, "hours": {"mon-fri": "9-17"}}]},
            "calendars[0].hours: '9-17': '9' is not a time like 09:00",
        ),
        (
            {"calendars": [{**CAL, "hours": {"mon-fri": "17:00-09:00"}}]},
            "calendars[0].hours: '17:00-09:00' must end after it starts",
        ),
        (
            {"calendars": [{**CAL, "hours": {"mon": "09:00-24:30"}}]},
            "calendars[0].hours: '09:00-24:30': '24:30' is not a time",
        ),
        (
            {"calendars": [{**CAL, "hours": {"mon-fri": ["09:00-13:00", "12:00-17:00"]}}]},
            "calendars[0].hours: mon-fri: opening intervals overlap",
        ),
        (
            {"calendars": [{**CAL, "hours": {"mon-fri": "09:00-17:00", "fri": "10:00-12:00"}}]},
            "calendars[0].hours: fri: fri is given twice",
        ),
        (
            {"calendars": [{**CAL, "hours": {"fri-mon": "09:00-17:00"}}]},
            "calendars[0].hours: 'fri-mon': a range of days runs forwards",
        ),
        (
            {"calendars": [{**CAL, "hours": {"weekdays": "09:00-17:00"}}]},
            "calendars[0].hours: 'weekdays' is not a day",
        ),
        (
            {"calendars": [{**CAL, "hours": {"mon-sun": []}}]},
            "calendars[0].hours: a calendar needs opening hours on at least one day",
        ),
        (
            {"calendars": [{**CAL, "holidays": {"country": "XX"}}]},
            "calendars[0].holidays.country: no public holidays known for country 'XX'",
        ),
        (
            {"calendars": [{**CAL, "holidays": {"country": "DE", "subdivision": "ZZ"}}]},
            "calendars[0].holidays.subdivision: no subdivision 'ZZ' in country DE",
        ),
        (
            {"calendars": [{**CAL, "holidays": {"dates": ["2026-13-01"]}}]},
            "calendars[0].holidays.dates[0]:",
        ),
        ({"calendars": [{**CAL, "name": "24x7"}]}, "calendars[0].name: calendar '24x7' is defined"),
        ({"calendars": [CAL, CAL]}, "calendars[1].name: calendar 'office' is defined twice"),
        ({"calendar": [CAL]}, "calendar: unknown key 'calendar'"),
    ],
)
def test_config_errors_name_the_key(raw, message):
    assert _error(raw).startswith(message)


def test_config_error_with_file_and_line():
    err = ConfigError("not a duration: '4x'", key="policies[0].targets.resolution")
    err.path, err.line = "slamon.yaml", 12
    assert str(err) == "slamon.yaml:12: policies[0].targets.resolution: not a duration: '4x'"


def test_full_example_builds():
    rules = load_rules(
        {
            "calendars": [
                {
                    "name": "berlin-office",
                    "timezone": "Europe/Berlin",
                    "hours": {"mon-fri": ["09:00-12:30", "13:30-18:00"], "sat": "10:00-14:00"},
                    "holidays": {"country": "DE", "subdivision": "BE", "dates": ["2026-12-24"]},
                }
            ],
            "policies": [
                {
                    "name": "urgent",
                    "match": {"priority": ["urgent"]},
                    "calendar": "24x7",
                    "targets": {"first_response": "30m", "next_response": "1h", "resolution": "4h"},
                    "warning": "80%",
                },
                {
                    "name": "standard",
                    "match": {"connector": ["zd"], "tags_none": ["no-sla"]},
                    "calendar": "berlin-office",
                    "targets": {
                        "first_response": "4h",
                        "next_response": "8h",
                        "periodic_update": "1d",
                        "resolution": "3d",
                    },
                    "pause_on": ["pending", "on_hold"],
                },
            ],
        }
    )
    urgent, standard = rules.policies
    assert urgent.targets == {"first_response": 1800, "next_response": 3600, "resolution": 14400}
    assert standard.targets["resolution"] == 3 * 86400
    assert standard.calendar is rules.calendars["berlin-office"]
    assert rules.policy_for("zd", {"priority": "urgent"}) is urgent
    assert rules.policy_for("zd", {"priority": "normal", "tags": frozenset({"vip"})}) is standard
    assert rules.policy_for("zd", {"priority": "low", "tags": frozenset({"no-sla"})}) is None
    assert rules.policy_for("mail", {"priority": "normal"}) is None
    # explicit dates and Berlin's own holidays (Women's Day, 8 March) close the office
    office = rules.calendars["berlin-office"]
    for day in (dt.date(2026, 12, 24), dt.date(2027, 3, 8), dt.date(2026, 12, 25)):
        noon = dt.datetime(day.year, day.month, day.day, 11, tzinfo=dt.UTC).timestamp()
        assert not office.is_open(noon), day
    assert office.is_open(dt.datetime(2026, 12, 23, 11, tzinfo=dt.UTC).timestamp())
