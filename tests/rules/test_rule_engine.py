"""Tests for the rule engine on its own, driven by a manual clock."""

from __future__ import annotations

from fleethub.models import Event
from fleethub.protocol import RobotStatus
from fleethub.rules.engine import RuleEngine
from fleethub.rules.loader import load_rules
from fleethub.rules.model import Rule
from fleethub.testing import ManualClock, StateFactory


def battery_rule(**overrides: object) -> Rule:
    values = {
        "id": "battery_low",
        "field": "battery",
        "comparison": "lt",
        "threshold": 20.0,
        **overrides,
    }
    return Rule.model_validate(values)


def test_defaults_load_with_heartbeat_timeout() -> None:
    """The bundled rules load and the offline rule takes the heartbeat timeout."""
    rules = {rule.id: rule for rule in load_rules(None, 42.0)}

    assert set(rules) == {
        "battery_low",
        "obstacle_detected",
        "robot_offline",
        "error_occurred",
        "mission_completed",
        "mission_failed",
    }
    assert rules["robot_offline"].threshold == 42.0
    assert rules["battery_low"].threshold == 20.0
    assert rules["obstacle_detected"].threshold == 0.5


def test_sustained_rule_ignores_short_dip() -> None:
    """A dip shorter than sustained_for_s fires nothing; a long one fires once."""
    clock = ManualClock()
    engine = RuleEngine([battery_rule(sustained_for_s=10.0)], clock=clock)
    state = StateFactory()

    assert engine.evaluate("r1", state(battery=10.0)) == []
    clock.advance(5.0)
    assert engine.evaluate("r1", state(battery=50.0)) == []
    assert engine.evaluate("r1", state(battery=10.0)) == []
    clock.advance(9.0)
    assert engine.tick() == []
    clock.advance(2.0)
    [event] = engine.tick()

    assert event.type == "battery_low"
    assert event.data["alert"] == "opened"
    assert engine.tick() == []
    assert engine.evaluate("r1", state(battery=9.0)) == []


def test_hysteresis_clears_only_past_clear_threshold() -> None:
    """An active rule stays quiet between threshold and clear_threshold."""
    engine = RuleEngine([battery_rule(clear_threshold=25.0)], clock=ManualClock())
    state = StateFactory()

    [fired] = engine.evaluate("r1", state(battery=19.0))
    for battery in (21.0, 19.0, 24.9, 18.0):
        assert engine.evaluate("r1", state(battery=battery)) == []
    [cleared] = engine.evaluate("r1", state(battery=25.0))
    [again] = engine.evaluate("r1", state(battery=19.5))

    assert cleared.type == "battery_low_cleared"
    assert cleared.data["alert_id"] == fired.data["alert_id"]
    assert again.data["alert_id"] != fired.data["alert_id"]


def test_missing_field_leaves_rule_unchanged() -> None:
    """A state without a battery neither fires nor clears the battery rule."""
    engine = RuleEngine([battery_rule()], clock=ManualClock())
    state = StateFactory()

    assert len(engine.evaluate("r1", state(battery=10.0))) == 1
    assert engine.evaluate("r1", state(battery=None)) == []
    assert len(engine.evaluate("r1", state(battery=90.0))) == 1


def test_status_and_range_rules_fire() -> None:
    """The error-status and obstacle defaults fire on matching states."""
    engine = RuleEngine(load_rules(None, 30.0), clock=ManualClock())
    state = StateFactory()

    events = engine.evaluate("r1", state(status=RobotStatus.ERROR, min_range=0.2))

    assert sorted(event.type for event in events) == [
        "error_occurred",
        "obstacle_detected",
    ]


def test_scan_without_returns_counts_as_far() -> None:
    """A scan with no return clears an obstacle alert and reports no value."""
    rule = Rule.model_validate(
        {"id": "near", "field": "min_range", "comparison": "lt", "threshold": 0.5}
    )
    engine = RuleEngine([rule], clock=ManualClock())
    state = StateFactory()
    engine.evaluate("r1", state(min_range=0.1))

    [cleared] = engine.evaluate("r1", state(min_range=40.0))

    assert cleared.data["value"] is None


def test_staleness_fires_and_clears() -> None:
    """The offline rule fires after the timeout and clears on the next state."""
    clock = ManualClock()
    engine = RuleEngine(load_rules(None, 30.0), clock=clock)
    state = StateFactory()
    engine.evaluate("r1", state())

    clock.advance(30.0)
    assert engine.tick() == []
    clock.advance(0.5)
    [offline] = engine.tick()
    clock.advance(60.0)
    assert engine.tick() == []
    [online] = engine.evaluate("r1", state())

    assert offline.type == "robot_offline"
    assert online.type == "robot_online"


def test_event_rule_ignores_rule_events() -> None:
    """Event rules fire on source events but never on events rules published."""
    engine = RuleEngine(load_rules(None, 30.0), clock=ManualClock())

    [alert] = engine.evaluate_event(Event(type="mission_failed", robot_id="r1"))
    echo = Event(type="mission_failed", robot_id="r1", data={"rule_id": "x"})

    assert alert.type == "mission_failed_alert"
    assert alert.severity == "critical"
    assert engine.evaluate_event(echo) == []


def test_rule_changes_apply_next_state() -> None:
    """Adding, disabling and removing a rule takes effect from the next state."""
    engine = RuleEngine([], clock=ManualClock())
    state = StateFactory()
    assert engine.evaluate("r1", state(battery=10.0)) == []

    engine.put(battery_rule())
    [opened] = engine.evaluate("r1", state(battery=10.0))
    assert opened.data["alert"] == "opened"

    engine.put(battery_rule(enabled=False))
    engine.remove("battery_low")
    engine.put(battery_rule(id="battery_very_low", threshold=5.0))
    assert engine.evaluate("r2", state(battery=10.0)) == []
    [very_low] = engine.evaluate("r2", state(battery=4.0))
    assert very_low.type == "battery_very_low"
