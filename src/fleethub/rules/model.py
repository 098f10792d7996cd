"""The rule model: what a rule watches, when it fires and what it does.

A rule watches either one field of every robot state or one event type:

- A *state rule* compares a state field with ``threshold``. It fires once the
  comparison has held for ``sustained_for_s`` seconds of server time, and
  clears when the value crosses ``clear_threshold`` (hysteresis) or, without
  one, as soon as the comparison stops holding. While it is active it does not
  fire again, so a battery hovering at 19 % raises one alert, not one per
  message.
- An *event rule* fires on every event of type ``event`` and never clears on
  its own. Events that rules publish never trigger event rules, so rules
  cannot chain into loops.

Every firing publishes an event of type ``event_type`` and opens an alert.
The actions add a command for the robot and control whether webhooks see
the rule's events.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleethub.models import Severity
from fleethub.protocol import RobotStatus

RuleId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
EventType = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]

MAX_SUSTAINED_FOR_S = 86_400.0


class StateField(enum.StrEnum):
    """A value a state rule reads from each robot state."""

    BATTERY = "battery"
    MIN_RANGE = "min_range"
    STATUS = "status"
    LINEAR_VELOCITY = "linear_velocity"
    ANGULAR_VELOCITY = "angular_velocity"
    SECONDS_SINCE_STATE = "seconds_since_state"


class Comparison(enum.StrEnum):
    """Comparison operator applied to the field's value and the threshold."""

    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    EQ = "eq"
    NE = "ne"


_NUMERIC_FIELDS = frozenset(StateField) - {StateField.STATUS}
_LOWER = frozenset({Comparison.LT, Comparison.LE})
_UPPER = frozenset({Comparison.GT, Comparison.GE})


class CommandAction(BaseModel):
    """A command sent to the robot whose state fired the rule."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    params: dict[str, Any] = Field(default_factory=dict)


class Actions(BaseModel):
    """Actions a rule runs when it fires, besides publishing its event."""

    model_config = ConfigDict(extra="forbid")

    command: CommandAction | None = None
    webhooks: bool = Field(
        True, description="Offer the rule's events to the matching webhooks."
    )


class Rule(BaseModel):
    """One declarative rule, as stored in the rules file and the API."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    id: RuleId
    description: str = Field("", max_length=500)
    enabled: bool = True
    field: StateField | None = None
    event: EventType | None = None
    comparison: Comparison | None = None
    threshold: float | str | None = None
    clear_threshold: float | None = None
    sustained_for_s: float = Field(0.0, ge=0.0, le=MAX_SUSTAINED_FOR_S)
    severity: Severity = Severity.WARNING
    event_type: EventType | None = Field(
        None, description="Type of the event published on firing; defaults to id."
    )
    clear_event_type: EventType | None = Field(
        None, description="Type of the event published on clearing."
    )
    actions: Actions = Field(default_factory=lambda: Actions(webhooks=True))

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        if (self.field is None) == (self.event is None):
            raise ValueError("A rule needs exactly one of 'field' or 'event'.")
        if self.event is not None:
            self._check_event_rule()
        elif self.field is StateField.STATUS:
            self._check_status_rule()
        else:
            self._check_numeric_rule()
        return self

    def _check_event_rule(self) -> None:
        extra = [
            name
            for name in ("comparison", "threshold", "clear_threshold")
            if getattr(self, name) is not None
        ]
        if extra or self.sustained_for_s:
            names = ", ".join(
                extra + (["sustained_for_s"] if self.sustained_for_s else [])
            )
            raise ValueError(f"An event rule takes no {names}; it fires on each event.")
        if self.clear_event_type is not None:
            raise ValueError(
                "An event rule never clears, so it takes no clear_event_type."
            )

    def _check_status_rule(self) -> None:
        if self.comparison not in (Comparison.EQ, Comparison.NE):
            raise ValueError("A 'status' rule needs comparison 'eq' or 'ne'.")
        statuses = [status.value for status in RobotStatus]
        if self.threshold not in statuses:
            raise ValueError(f"A 'status' rule needs a threshold in {statuses}.")
        if self.clear_threshold is not None:
            raise ValueError("A 'status' rule takes no clear_threshold.")

    def _check_numeric_rule(self) -> None:
        name = self.field.value if self.field is not None else "?"
        if self.comparison is None:
            raise ValueError(f"A {name!r} rule needs a comparison.")
        if self.threshold is None and self.field is not StateField.SECONDS_SINCE_STATE:
            raise ValueError(f"A {name!r} rule needs a numeric threshold.")
        if isinstance(self.threshold, str):
            raise ValueError(f"A {name!r} rule needs a numeric threshold.")
        self._check_clear_threshold()

    def _check_clear_threshold(self) -> None:
        clear, threshold = self.clear_threshold, self.threshold
        if clear is None or not isinstance(threshold, float):
            return
        assert self.comparison is not None
        if self.comparison not in _LOWER | _UPPER:
            raise ValueError("clear_threshold needs comparison lt, le, gt or ge.")
        if self.comparison in _LOWER and clear < threshold:
            raise ValueError(
                f"clear_threshold {clear:g} must be at or above threshold "
                f"{threshold:g} for a '{self.comparison.value}' rule."
            )
        if self.comparison in _UPPER and clear > threshold:
            raise ValueError(
                f"clear_threshold {clear:g} must be at or below threshold "
                f"{threshold:g} for a '{self.comparison.value}' rule."
            )

    @property
    def fired_event_type(self) -> str:
        """Type of the event published when the rule fires."""
        return self.event_type or self.id

    @property
    def cleared_event_type(self) -> str:
        """Type of the event published when the rule clears."""
        return self.clear_event_type or f"{self.fired_event_type}_cleared"

    def with_default_timeout(self, heartbeat_timeout_s: float) -> Rule:
        """Fill in the heartbeat timeout as the threshold of a staleness rule."""
        if self.field is StateField.SECONDS_SINCE_STATE and self.threshold is None:
            return self.model_copy(update={"threshold": heartbeat_timeout_s})
        return self


def compare(value: float | str, comparison: Comparison, threshold: float | str) -> bool:
    """Apply ``comparison`` to ``value`` and ``threshold``."""
    if comparison is Comparison.EQ:
        return value == threshold
    if comparison is Comparison.NE:
        return value != threshold
    assert isinstance(value, float) and isinstance(threshold, float)
    if comparison is Comparison.LT:
        return value < threshold
    if comparison is Comparison.LE:
        return value <= threshold
    if comparison is Comparison.GT:
        return value > threshold
    return value >= threshold


def clears(rule: Rule, value: float | str) -> bool:
    """Return True when ``value`` ends an active condition of ``rule``."""
    assert rule.comparison is not None and rule.threshold is not None
    if rule.clear_threshold is None:
        return not compare(value, rule.comparison, rule.threshold)
    assert isinstance(value, float)
    if rule.comparison in _LOWER:
        return value >= rule.clear_threshold
    return value <= rule.clear_threshold
