"""Property-based fuzzing of the robot frame decoder."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleethub.protocol import (
    CommandResponse,
    FrameError,
    StateUpdate,
    decode_robot_frame,
)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
FIELD_NAMES = [
    "type",
    "seq",
    "data",
    "timestamp",
    "position",
    "orientation",
    "velocity",
    "status",
    "battery",
    "lidar",
    "ranges",
    "x",
    "y",
    "yaw",
    "linear",
    "robot_id",
    "command_id",
    "message",
    "result",
]


FRAME_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES), children, max_size=6)
    ),
    max_leaves=12,
)
FRAME_TYPES = st.sampled_from(
    ["state_update", "command_response", "ack", "", "STATE_UPDATE"]
)
VALID_STATE: dict[str, Any] = {
    "type": "state_update",
    "seq": 1,
    "data": {
        "timestamp": "2026-01-01T00:00:00Z",
        "position": {"x": 1.0, "y": 2.0},
        "orientation": {"yaw": 0.5},
        "velocity": {"linear": 0.2},
        "status": "moving",
        "battery": 80.0,
        "lidar": {"ranges": [1.0, 2.0]},
    },
}


@st.composite
def frame_like(draw: st.DrawFn) -> Any:
    """Objects with known field names and a frame type, holding random values."""
    fields = draw(
        st.dictionaries(st.sampled_from(FIELD_NAMES), FRAME_VALUES, max_size=6)
    )
    return fields | {"type": draw(FRAME_TYPES)}


@st.composite
def mutated_state(draw: st.DrawFn) -> Any:
    """A valid state frame with one field, at any depth, replaced or removed."""
    frame = json.loads(json.dumps(VALID_STATE))
    parent = frame if draw(st.booleans()) else frame["data"]
    nested = [key for key, value in parent.items() if isinstance(value, dict)]
    if nested and draw(st.booleans()):
        parent = parent[draw(st.sampled_from(sorted(nested)))]
    key = draw(st.sampled_from(sorted(parent) + ["unknown"]))
    if draw(st.booleans()):
        parent.pop(key, None)
    else:
        parent[key] = draw(JSON_VALUES)
    return frame


def _decode(raw: bytes | str) -> None:
    try:
        frame = decode_robot_frame(raw)
    except FrameError as exc:
        assert exc.code
        assert exc.message
        assert exc.seq is None or exc.seq >= 0
        return
    assert isinstance(frame, (StateUpdate, CommandResponse))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    """Any byte string decodes or raises FrameError, nothing else."""
    _decode(raw)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text(raw: str) -> None:
    """Any text decodes or raises FrameError, nothing else."""
    _decode(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(frame_like() | mutated_state())
def test_frame_shaped_json(frame: Any) -> None:
    """JSON shaped like frames, with random values, decodes or raises FrameError."""
    _decode(json.dumps(frame))


@settings(max_examples=50)
@given(st.integers(min_value=1, max_value=100_000))
def test_deep_nesting(depth: int) -> None:
    """Deep nesting decodes or raises FrameError, never RecursionError."""
    _decode("[" * depth + "]" * depth)
    _decode(
        '{"type": "state_update", "data": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    )


def test_non_standard_constants() -> None:
    """NaN and Infinity tokens are rejected as invalid JSON."""
    for token in ("NaN", "Infinity", "-Infinity"):
        raw = '{"type": "state_update", "seq": 1, "data": {"battery": ' + token + "}}"
        try:
            decode_robot_frame(raw)
        except FrameError as exc:
            assert exc.code == "invalid_json"
        else:
            raise AssertionError(f"{token} was accepted")
