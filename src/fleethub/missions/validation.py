"""Checks on a mission request before anything is stored.

Each rejection is an :class:`InvalidInput` with a stable code and, for a
waypoint, its index and field in ``details``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from fleethub.commands.validation import validate_command
from fleethub.errors import InvalidInput
from fleethub.missions.store import Task, Waypoint

MAX_COORDINATE_M = 1e6
MAX_TOLERANCE_M = 100.0
MAX_YAW_RAD = 2 * math.pi


def build_waypoints(
    raw: list[dict[str, Any]], default_tolerance: float, max_waypoints: int
) -> list[Waypoint]:
    """Validate waypoint dicts (``x``, ``y``, ``yaw``, ``tolerance``, ``task``)."""
    if not raw:
        raise InvalidInput(
            "A mission needs at least one waypoint.", code="no_waypoints"
        )
    if len(raw) > max_waypoints:
        raise InvalidInput(
            f"A mission has {len(raw)} waypoints; the limit is {max_waypoints}.",
            code="too_many_waypoints",
            limit=max_waypoints,
        )
    return [_waypoint(index, item, default_tolerance) for index, item in enumerate(raw)]


def _waypoint(index: int, item: dict[str, Any], default_tolerance: float) -> Waypoint:
    x = _number(index, item, "x", MAX_COORDINATE_M)
    y = _number(index, item, "y", MAX_COORDINATE_M)
    yaw = None if item.get("yaw") is None else _number(index, item, "yaw", MAX_YAW_RAD)
    tolerance = default_tolerance
    if item.get("tolerance") is not None:
        tolerance = _number(index, item, "tolerance", MAX_TOLERANCE_M)
        if tolerance <= 0:
            raise _invalid(
                index,
                "tolerance",
                tolerance,
                f"above 0 and at most {MAX_TOLERANCE_M:g}",
            )
    task = None
    if item.get("task") is not None:
        task_item = item["task"]
        task = Task(type=task_item["type"], params=task_item.get("params") or {})
        validate_command(task.type, task.params)
    return Waypoint(x=x, y=y, yaw=yaw, tolerance=tolerance, task=task)


def _number(index: int, item: dict[str, Any], name: str, limit: float) -> float:
    value = item.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(index, name, value, "a number")
    if not math.isfinite(value) or abs(value) > limit:
        raise _invalid(index, name, value, f"a finite number within ±{limit:g}")
    return float(value)


def _invalid(index: int, name: str, value: Any, expected: str) -> InvalidInput:
    return InvalidInput(
        f"Waypoint {index}: {name} = {value!r} is invalid; expected {expected}.",
        code="invalid_waypoint",
        index=index,
        field=name,
    )


def check_deadline(deadline: datetime | None, now: datetime) -> None:
    """Reject a deadline without a time zone or not in the future."""
    if deadline is None:
        return
    if deadline.tzinfo is None:
        raise InvalidInput(
            "deadline needs a time zone, e.g. '2026-01-01T00:00:00Z'.",
            code="timestamp_missing_timezone",
            field="deadline",
        )
    if deadline <= now:
        raise InvalidInput(
            f"deadline {deadline.isoformat()} is not in the future.",
            code="invalid_deadline",
        )


def check_timeout(timeout_s: float) -> None:
    """Reject a timeout that is not a positive finite number of seconds."""
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise InvalidInput(
            f"timeout_s = {timeout_s} must be a positive number of seconds.",
            code="invalid_timeout",
        )
