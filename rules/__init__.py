"""slamon's SLA engine: business calendars, ordered policies and clocks.

Pure: events in, clocks out. No I/O, no database, no reading of the clock — the instant
of evaluation is always passed in.
"""

from rules.calendar import Calendar
from rules.clocks import Clock, Completion, Evaluation, evaluate
from rules.durations import format_duration, parse_duration
from rules.errors import ConfigError
from rules.events import Created, Event, FieldChange, Message, Rating, Removed, in_order
from rules.policies import METRICS, Policy, RuleSet, Warning
from rules.schema import RulesSpec, build_rules, load_rules

__all__ = [
    "METRICS",
    "Calendar",
    "Clock",
    "Completion",
    "ConfigError",
    "Created",
    "Evaluation",
    "Event",
    "FieldChange",
    "Message",
    "Policy",
    "Rating",
    "Removed",
    "RuleSet",
    "RulesSpec",
    "Warning",
    "build_rules",
    "evaluate",
    "format_duration",
    "in_order",
    "load_rules",
    "parse_duration",
]
