"""The rule engine: turn states, events and the passing of time into events.

The engine is synchronous and does no I/O, so the ingest pipeline can call it
inline. It keeps, per rule and robot, when the condition started to hold and
the id of the open alert. Time comes from the injected ``clock`` (server
time, never the robot's timestamps), so ``sustained_for_s`` and staleness
rules do not depend on the robot's clock, and tests drive them with a manual
clock.

NOTE: the engine keeps its state in this process's memory. With several API
processes each one only evaluates the robots that stream to it, and after a
restart a robot that never sends another state is not reported offline.

Every event the engine returns carries ``rule_id``, ``alert_id`` and
``alert`` (``"opened"`` or ``"cleared"``) in its data; the dispatcher reads
those to store alerts and run the rule's actions.
"""

from __future__ import annotations

import math
import operator
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from operator import attrgetter
from typing import Any, NamedTuple

from fleethub.models import Event, Severity, utcnow
from fleethub.protocol import RobotState
from fleethub.rules.model import Comparison, Rule, StateField, clears, compare

Clock = Callable[[], datetime]


@dataclass
class _Condition:
    """One rule's condition for one robot."""

    holding_since: datetime | None = None
    alert_id: str | None = None


def read_field(field: StateField, state: RobotState) -> float | str | None:
    """Return the state's value for ``field``, or None when the state lacks it."""
    if field is StateField.BATTERY:
        return state.battery
    if field is StateField.MIN_RANGE:
        if state.lidar is None:
            return None
        nearest = state.lidar.min_valid_range()
        # A scan without a single return means nothing is near.
        return math.inf if nearest is None else nearest
    if field is StateField.STATUS:
        return state.status.value
    if field is StateField.LINEAR_VELOCITY:
        return state.velocity.linear
    if field is StateField.ANGULAR_VELOCITY:
        return state.velocity.angular
    return 0.0  # seconds_since_state is zero when a state arrives


def _reader(field: StateField) -> Callable[[RobotState], float | str | None]:
    """Return a function that reads ``field`` from a state like :func:`read_field`.

    Picked once per rule, because comparing the field against each enum
    member for every state took most of the engine's time per state.
    """
    if field is StateField.BATTERY:
        return attrgetter("battery")
    if field is StateField.STATUS:
        return lambda state: state.status.value
    if field is StateField.LINEAR_VELOCITY:
        return lambda state: state.velocity.linear
    if field is StateField.ANGULAR_VELOCITY:
        return lambda state: state.velocity.angular
    return partial(read_field, field)


_OPERATORS: dict[Comparison, Callable[[Any, Any], bool]] = {
    Comparison.LT: operator.lt,
    Comparison.LE: operator.le,
    Comparison.GT: operator.gt,
    Comparison.GE: operator.ge,
    Comparison.EQ: operator.eq,
    Comparison.NE: operator.ne,
}


class _StateRule(NamedTuple):
    """A state rule with its field reader and comparison picked in advance."""

    rule: Rule
    read: Callable[[RobotState], float | str | None]
    meets: Callable[[Any, Any], bool]


class RuleEngine:
    """Evaluate rules per robot; return the events that fire or clear."""

    def __init__(self, rules: Iterable[Rule], *, clock: Clock = utcnow) -> None:
        self.clock = clock
        self._rules: dict[str, Rule] = {rule.id: rule for rule in rules}
        # The enabled state rules, rebuilt when a rule is added or removed
        # rather than for every state.
        self._state_rules_cache: list[_StateRule] | None = None
        self._conditions: dict[tuple[str, str], _Condition] = {}
        self._last_state_at: dict[str, datetime] = {}

    @property
    def rules(self) -> list[Rule]:
        """The current rules, in the order they were added."""
        return list(self._rules.values())

    def get(self, rule_id: str) -> Rule | None:
        return self._rules.get(rule_id)

    def put(self, rule: Rule) -> None:
        """Add or replace a rule; a replaced rule keeps its open alerts."""
        self._rules[rule.id] = rule
        self._state_rules_cache = None
        for (rule_id, _), condition in self._conditions.items():
            if rule_id == rule.id:
                condition.holding_since = None

    def remove(self, rule_id: str) -> None:
        """Drop a rule and its per-robot conditions."""
        self._rules.pop(rule_id, None)
        self._state_rules_cache = None
        for key in [key for key in self._conditions if key[0] == rule_id]:
            del self._conditions[key]

    def restore(self, open_alerts: Iterable[tuple[str, str, str]]) -> None:
        """Mark ``(rule_id, robot_id, alert_id)`` alerts as active after a restart."""
        for rule_id, robot_id, alert_id in open_alerts:
            self._condition(rule_id, robot_id).alert_id = alert_id

    def forget(self, robot_id: str) -> None:
        """Reset the robot's pending conditions (it disconnected).

        Open alerts and the time of the last state stay, so staleness rules
        still fire for a robot that went away.
        """
        for (_, condition_robot), condition in self._conditions.items():
            if condition_robot == robot_id:
                condition.holding_since = None

    def evaluate(self, robot_id: str, state: RobotState) -> list[Event]:
        """Return the events ``state`` fires or clears for ``robot_id``."""
        now = self.clock()
        self._last_state_at[robot_id] = now
        fired: list[Event] = []
        conditions = self._conditions
        for rule, read, meets in self._prepared_state_rules():
            value = read(state)
            if value is None:
                continue
            # Most states change nothing: no alert is open, no condition is
            # pending and the value does not meet the condition. Settle that
            # case here, without the general step.
            condition = conditions.get((rule.id, robot_id))
            if (
                condition is None
                or (condition.alert_id is None and condition.holding_since is None)
            ) and not meets(value, rule.threshold):
                continue
            events = self._step(rule, robot_id, value, now)
            if events:
                fired.extend(events)
        return fired

    def tick(self) -> list[Event]:
        """Return the events that fire or clear because time has passed."""
        now = self.clock()
        fired: list[Event] = []
        for rule in self._state_rules():
            if rule.field is StateField.SECONDS_SINCE_STATE:
                fired.extend(self._tick_staleness(rule, now))
            elif rule.sustained_for_s > 0:
                fired.extend(self._tick_sustained(rule, now))
        return fired

    def evaluate_event(self, event: Event) -> list[Event]:
        """Return the events that event rules fire for ``event``.

        Events that rules published (they carry ``rule_id``) are ignored.
        """
        if "rule_id" in event.data:
            return []
        return [
            _fired(rule, event.robot_id, _event_details(event))
            for rule in self._rules.values()
            if rule.enabled and rule.event == event.type
        ]

    def _state_rules(self) -> list[Rule]:
        return [prepared.rule for prepared in self._prepared_state_rules()]

    def _prepared_state_rules(self) -> list[_StateRule]:
        if self._state_rules_cache is None:
            self._state_rules_cache = [
                _StateRule(rule, _reader(rule.field), _OPERATORS[rule.comparison])
                for rule in self._rules.values()
                if rule.enabled and rule.field and rule.comparison is not None
            ]
        return self._state_rules_cache

    def _condition(self, rule_id: str, robot_id: str) -> _Condition:
        key = (rule_id, robot_id)
        condition = self._conditions.get(key)
        if condition is None:
            condition = self._conditions[key] = _Condition()
        return condition

    def _step(
        self, rule: Rule, robot_id: str, value: float | str, now: datetime
    ) -> list[Event]:
        """Advance one condition with a new value and return what it raises."""
        assert rule.comparison is not None and rule.threshold is not None
        condition = self._condition(rule.id, robot_id)
        if condition.alert_id is not None:
            if not clears(rule, value):
                return []
            alert_id, condition.alert_id = condition.alert_id, None
            condition.holding_since = None
            return [_cleared(rule, robot_id, alert_id, value)]
        if not compare(value, rule.comparison, rule.threshold):
            condition.holding_since = None
            return []
        if condition.holding_since is None:
            condition.holding_since = now
        held_s = (now - condition.holding_since).total_seconds()
        if held_s < rule.sustained_for_s:
            return []
        event = _fired(rule, robot_id, _value_details(rule, value, held_s))
        condition.alert_id = event.data["alert_id"]
        return [event]

    def _tick_staleness(self, rule: Rule, now: datetime) -> list[Event]:
        fired: list[Event] = []
        for robot_id, last in self._last_state_at.items():
            silent_s = (now - last).total_seconds()
            fired.extend(self._step(rule, robot_id, silent_s, now))
        return fired

    def _tick_sustained(self, rule: Rule, now: datetime) -> list[Event]:
        """Fire conditions that have now held long enough without a new state."""
        fired: list[Event] = []
        for (rule_id, robot_id), condition in self._conditions.items():
            since = condition.holding_since
            if rule_id != rule.id or since is None or condition.alert_id:
                continue
            held_s = (now - since).total_seconds()
            if held_s >= rule.sustained_for_s:
                event = _fired(rule, robot_id, {"held_s": held_s})
                condition.alert_id = event.data["alert_id"]
                fired.append(event)
        return fired


def _finite(value: float | str) -> float | str | None:
    """Make ``value`` safe for strict JSON; infinity (no lidar return) is None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _value_details(rule: Rule, value: float | str, held_s: float) -> dict[str, Any]:
    return {
        "field": rule.field.value if rule.field else None,
        "comparison": rule.comparison.value if rule.comparison else None,
        "threshold": rule.threshold,
        "value": _finite(value),
        "held_s": held_s,
    }


def _event_details(event: Event) -> dict[str, Any]:
    return {
        "source_event_id": event.event_id,
        "source_event_type": event.type,
        "source_data": event.data,
    }


def _fired(rule: Rule, robot_id: str | None, details: dict[str, Any]) -> Event:
    data = {"rule_id": rule.id, "alert_id": str(uuid.uuid4()), "alert": "opened"}
    return Event(
        type=rule.fired_event_type,
        robot_id=robot_id,
        severity=rule.severity,
        data={**data, **details},
    )


def _cleared(rule: Rule, robot_id: str, alert_id: str, value: float | str) -> Event:
    return Event(
        type=rule.cleared_event_type,
        robot_id=robot_id,
        severity=Severity.INFO,
        data={
            "rule_id": rule.id,
            "alert_id": alert_id,
            "alert": "cleared",
            "value": _finite(value),
        },
    )
