"""The built-in threshold rules: battery low, obstacle detected, robot error.

Each rule is a condition with hysteresis: it fires once when the condition
starts to hold and re-arms only after the value has crossed a separate clear
threshold. A battery hovering around 20 % therefore raises one event, not
one per message. States that do not carry the rule's value (no battery
sensor, no scan) leave the rule as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleethub.models import Event, Severity
from fleethub.protocol import RobotState, RobotStatus
from fleethub.settings import Settings

# Returns the rule's value from a state, or None when the state lacks it.
Extractor = Callable[[RobotState], float | None]


def battery_level(state: RobotState) -> float | None:
    return state.battery


def nearest_obstacle(state: RobotState) -> float | None:
    if state.lidar is None:
        return None
    nearest = state.lidar.min_valid_range()
    # A scan with no return at all means nothing is near: report it as "far".
    return float("inf") if nearest is None else nearest


def is_error(state: RobotState) -> float | None:
    return 1.0 if state.status is RobotStatus.ERROR else 0.0


@dataclass(frozen=True)
class ThresholdRule:
    """Fire ``event_type`` when the value drops below ``threshold``.

    The rule clears once the value reaches ``clear_at`` or more.
    """

    event_type: str
    field_name: str
    extract: Extractor
    threshold: float
    clear_at: float
    severity: Severity

    def holds(self, value: float) -> bool:
        return value < self.threshold

    def clears(self, value: float) -> bool:
        return value >= self.clear_at


@dataclass
class _RobotRuleState:
    active: set[str] = field(default_factory=set)


def builtin_rules(settings: Settings) -> list[ThresholdRule]:
    """Build the default rules from the thresholds in ``settings``."""
    return [
        ThresholdRule(
            "battery_low",
            "battery",
            battery_level,
            settings.battery_low_percent,
            max(settings.battery_low_clear_percent, settings.battery_low_percent),
            Severity.WARNING,
        ),
        ThresholdRule(
            "obstacle_detected",
            "min_range",
            nearest_obstacle,
            settings.obstacle_distance_m,
            max(settings.obstacle_clear_distance_m, settings.obstacle_distance_m),
            Severity.WARNING,
        ),
        # "value < 0.5" is "status is error"; any other status clears it.
        ThresholdRule("error_occurred", "status", _not_error, 0.5, 0.5, Severity.CRITICAL),
    ]


def _not_error(state: RobotState) -> float | None:
    return 1.0 - (is_error(state) or 0.0)


class RuleEngine:
    """Evaluate rules per robot and return the events that fire."""

    def __init__(self, rules: list[ThresholdRule]) -> None:
        self.rules = rules
        self._robots: dict[str, _RobotRuleState] = {}

    def evaluate(self, robot_id: str, state: RobotState) -> list[Event]:
        """Return the events ``state`` raises for ``robot_id``."""
        robot = self._robots.get(robot_id)
        if robot is None:
            robot = self._robots[robot_id] = _RobotRuleState()
        fired: list[Event] = []
        for rule in self.rules:
            value = rule.extract(state)
            if value is None:
                continue
            if rule.event_type in robot.active:
                if rule.clears(value):
                    robot.active.discard(rule.event_type)
            elif rule.holds(value):
                robot.active.add(rule.event_type)
                fired.append(_event(rule, robot_id, state, value))
        return fired

    def forget(self, robot_id: str) -> None:
        """Drop a robot's rule state (it disconnected)."""
        self._robots.pop(robot_id, None)


def _event(rule: ThresholdRule, robot_id: str, state: RobotState, value: float) -> Event:
    data: dict[str, Any] = {
        "rule": rule.event_type,
        "field": rule.field_name,
        "threshold": rule.threshold,
        "state_timestamp": state.timestamp.isoformat(),
        "position": {"x": state.position.x, "y": state.position.y},
    }
    if rule.field_name == "status":
        data["status"] = state.status.value
        data["message"] = state.error_message
    else:
        data["value"] = value
    return Event(type=rule.event_type, robot_id=robot_id, severity=rule.severity, data=data)
