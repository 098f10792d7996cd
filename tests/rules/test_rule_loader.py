"""Tests for reading and validating rules files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fleethub.errors import InvalidInput
from fleethub.rules.loader import load_rules
from fleethub.rules.model import Rule

BATTERY = {"id": "low", "field": "battery", "comparison": "lt", "threshold": 20.0}

INVALID_RULES = [
    ({"id": "none"}, "exactly one of 'field' or 'event'"),
    ({**BATTERY, "event": "mission_failed"}, "exactly one of 'field' or 'event'"),
    ({**BATTERY, "clear_threshold": 10.0}, "at or above threshold"),
    ({**BATTERY, "comparison": "gt", "clear_threshold": 30.0}, "at or below threshold"),
    ({**BATTERY, "comparison": "eq", "clear_threshold": 30.0}, "lt, le, gt or ge"),
    ({**BATTERY, "threshold": "low"}, "numeric threshold"),
    ({**BATTERY, "comparison": None}, "needs a comparison"),
    ({"id": "s", "field": "status", "comparison": "lt", "threshold": "error"}, "'eq'"),
    (
        {"id": "s", "field": "status", "comparison": "eq", "threshold": "on"},
        "threshold in",
    ),
    ({"id": "e", "event": "mission_failed", "threshold": 1.0}, "takes no threshold"),
    ({"id": "e", "event": "mission_failed", "sustained_for_s": 5.0}, "sustained_for_s"),
    ({**BATTERY, "sustained_for_s": -1.0}, "greater than or equal to 0"),
    ({**BATTERY, "id": "bad id"}, "pattern"),
    ({**BATTERY, "colour": "red"}, "Extra inputs"),
]


@pytest.mark.parametrize(("values", "message"), INVALID_RULES)
def test_invalid_rule_is_rejected(values: dict[str, object], message: str) -> None:
    """Each malformed rule raises a validation error that names the problem."""
    with pytest.raises(ValidationError) as caught:
        Rule.model_validate(values)

    assert message in str(caught.value)


def test_rules_file_error_names_rule(tmp_path: Path) -> None:
    """A broken rule in a file raises invalid_rules_file with its index."""
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rules]]\nid = "ok"\nevent = "x"\n\n'
        '[[rules]]\nid = "bad"\nfield = "battery"\ncomparison = "lt"\n'
    )

    with pytest.raises(InvalidInput) as caught:
        load_rules(path, 30.0)

    assert caught.value.code == "invalid_rules_file"
    assert caught.value.details["index"] == 1
    assert "numeric threshold" in caught.value.message


def test_duplicate_rule_ids_rejected(tmp_path: Path) -> None:
    """Two rules with one id in a file raise invalid_rules_file."""
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rules]]\nid = "a"\nevent = "x"\n\n[[rules]]\nid = "a"\nevent = "y"\n'
    )

    with pytest.raises(InvalidInput) as caught:
        load_rules(path, 30.0)

    assert caught.value.details["rule_id"] == "a"


def test_unreadable_rules_file_rejected(tmp_path: Path) -> None:
    """A missing file and invalid TOML both raise invalid_rules_file."""
    broken = tmp_path / "broken.toml"
    broken.write_text("[[rules]\n")

    for path in (tmp_path / "missing.toml", broken):
        with pytest.raises(InvalidInput) as caught:
            load_rules(path, 30.0)
        assert caught.value.code == "invalid_rules_file"


def test_rules_file_setting_replaces_defaults(tmp_path: Path) -> None:
    """A rules file with one rule yields exactly that rule."""
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rules]]\nid = "fast"\nfield = "linear_velocity"\n'
        'comparison = "gt"\nthreshold = 1.5\nseverity = "info"\n'
    )

    [rule] = load_rules(path, 30.0)

    assert rule.id == "fast"
    assert rule.threshold == 1.5
    assert rule.severity == "info"
