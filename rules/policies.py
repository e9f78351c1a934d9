"""Policies: ordered targets with a match; the first policy whose match holds applies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from rules.calendar import Calendar
from rules.events import DONE, FieldValue

METRICS = ("first_response", "next_response", "periodic_update", "resolution")
DEFAULT_PAUSE_ON = frozenset({"pending", "on_hold"})
SINGLE_KEYS = ("connector", "priority", "queue", "channel", "type", "organization")
TAG_KEYS = ("tags_any", "tags_all", "tags_none")


@dataclass(frozen=True, slots=True)
class Warning:
    """When a running clock turns at_risk: at a share of its target, or a duration
    before its deadline."""

    share: float | None = None
    before: int | None = None

    def threshold(self, target: int) -> float:
        """Business seconds of elapsed time at which the clock is at risk."""
        if self.before is not None:
            return max(0, target - self.before)
        return target * (self.share if self.share is not None else 1.0)


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    calendar: Calendar
    targets: Mapping[str, int]  # metric -> business seconds
    match: Mapping[str, frozenset[str]] = field(default_factory=dict)
    warning: Warning = Warning(share=0.8)
    pause_on: frozenset[str] = DEFAULT_PAUSE_ON
    paused_in: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The statuses in which each clock does not run (solved tickets need no resolution).
        paused = {"periodic_update": self.pause_on, "resolution": self.pause_on | DONE}
        object.__setattr__(self, "paused_in", paused)

    def matches(self, connector: str, fields: Mapping[str, FieldValue]) -> bool:
        for key, wanted in self.match.items():
            if key in TAG_KEYS:
                tags = fields.get("tags", frozenset())
                have = tags if isinstance(tags, frozenset) else frozenset({tags})
                if key == "tags_any" and not have & wanted:
                    return False
                if key == "tags_all" and not wanted <= have:
                    return False
                if key == "tags_none" and have & wanted:
                    return False
            else:
                value = connector if key == "connector" else fields.get(key, "")
                if value not in wanted:
                    return False
        return True


@dataclass(frozen=True)
class RuleSet:
    """Calendars and ordered policies, as built from the config."""

    policies: Sequence[Policy]
    calendars: Mapping[str, Calendar]

    @cached_property
    def matched_fields(self) -> frozenset[str]:
        """Ticket fields whose change can change which policy applies."""
        keys = {key for policy in self.policies for key in policy.match}
        return frozenset({"tags" if key in TAG_KEYS else key for key in keys})

    @cached_property
    def _chosen(self) -> dict[tuple[object, ...], Policy | None]:
        return {}

    @cached_property
    def _keys(self) -> tuple[str, ...]:
        return tuple(sorted(self.matched_fields))

    def policy_for(self, connector: str, fields: Mapping[str, FieldValue]) -> Policy | None:
        """The first policy whose match holds (remembered per combination of the fields
        that matter: tickets share a handful of them)."""
        key = (connector, *[fields.get(name) for name in self._keys])
        try:
            return self._chosen[key]
        except KeyError:
            pass
        chosen = next((p for p in self.policies if p.matches(connector, fields)), None)
        if len(self._chosen) > 100_000:  # free-text fields: keep the memory bounded
            self._chosen.clear()
        self._chosen[key] = chosen
        return chosen
