"""The robot link's message types and their strict decoding.

Frames are JSON text (RFC 8259: no NaN or Infinity tokens). A robot sends
``state_update`` and ``command_response`` frames; the server sends ``ack``,
``command`` and ``error`` frames. ``docs/protocol.md`` describes them for
robot developers; this module is the reference.

Decoding is done by msgspec against typed structs, so a frame is parsed and
validated in one pass without building intermediate dicts.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

# Coordinates and speeds are bounded so that a typo or an overflow cannot poison
# analytics; 1e6 m is far beyond any site a fleet drives on.
Coordinate = Annotated[float, msgspec.Meta(ge=-1e6, le=1e6)]
Angle = Annotated[float, msgspec.Meta(ge=-1e3, le=1e3)]
Speed = Annotated[float, msgspec.Meta(ge=-1e3, le=1e3)]
Percent = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
Range = Annotated[float, msgspec.Meta(ge=0.0, le=1e4)]
MAX_SEQ = 2**63 - 1
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
# PostgreSQL text cannot store U+0000, so strings that reach the database
# reject it here instead of failing at insert time.
NO_NUL_PATTERN = "^[^\x00]*$"
ShortText = Annotated[str, msgspec.Meta(max_length=1024, pattern=NO_NUL_PATTERN)]
Identifier = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=NO_NUL_PATTERN)
]


class RobotStatus(enum.StrEnum):
    """The activity a robot reports."""

    IDLE = "idle"
    MOVING = "moving"
    BUSY = "busy"
    ERROR = "error"
    CHARGING = "charging"


class Position(msgspec.Struct, forbid_unknown_fields=True):
    """Position in the site's map frame, metres."""

    x: Coordinate
    y: Coordinate
    z: Coordinate = 0.0


class Orientation(msgspec.Struct, forbid_unknown_fields=True):
    """Orientation as roll, pitch and yaw, radians."""

    yaw: Angle
    roll: Angle = 0.0
    pitch: Angle = 0.0


class Velocity(msgspec.Struct, forbid_unknown_fields=True):
    """Linear speed (m/s, forward positive) and angular speed (rad/s)."""

    linear: Speed
    angular: Speed = 0.0


class Lidar(msgspec.Struct, forbid_unknown_fields=True):
    """One planar laser scan.

    A range counts as a return when ``range_min < r < range_max``; values at
    or past ``range_max`` mean the beam hit nothing.
    """

    ranges: list[Range]
    range_min: Range = 0.0
    range_max: Range = 1e4
    angle_min: Angle = 0.0
    angle_increment: Angle = 0.0

    def min_valid_range(self) -> float | None:
        """Return the smallest range that is a real return, or None."""
        valid = [r for r in self.ranges if self.range_min < r < self.range_max]
        return min(valid) if valid else None


class RobotState(msgspec.Struct, forbid_unknown_fields=True):
    """One state report from a robot."""

    timestamp: AwareDatetime
    position: Position
    orientation: Orientation
    velocity: Velocity
    status: RobotStatus
    battery: Percent | None = None
    lidar: Lidar | None = None
    robot_id: str | None = None
    error_message: ShortText | None = None


class CommandResult(msgspec.Struct, forbid_unknown_fields=True):
    """A robot's reply to a command."""

    command_id: Identifier
    status: Literal["acknowledged", "succeeded", "failed", "rejected"]
    message: ShortText | None = None
    result: dict[str, Any] | None = None


class StateUpdate(
    msgspec.Struct, tag="state_update", tag_field="type", forbid_unknown_fields=True
):
    """Robot to server: a state with the robot's sequence number."""

    seq: Seq
    data: RobotState


class CommandResponse(
    msgspec.Struct, tag="command_response", tag_field="type", forbid_unknown_fields=True
):
    """Robot to server: progress or outcome of a command."""

    data: CommandResult


class Welcome(msgspec.Struct, tag="welcome", tag_field="type"):
    """Server to robot, first frame: the newest state already stored.

    A reconnecting robot treats every unacknowledged state at or before
    ``last_timestamp`` as stored and resends only the later ones.
    """

    robot_id: str
    last_timestamp: datetime | None


class Ack(msgspec.Struct, tag="ack", tag_field="type"):
    """Server to robot: every state up to ``seq`` is durably stored or rejected."""

    seq: int


class CommandFrame(msgspec.Struct, tag="command", tag_field="type"):
    """Server to robot: a command to carry out."""

    data: dict[str, Any]


class ErrorFrame(msgspec.Struct, tag="error", tag_field="type", omit_defaults=True):
    """Server to robot: a frame was rejected; ``seq`` names it when known."""

    code: str
    message: str
    seq: int | None = None
    retryable: bool = False
    details: dict[str, Any] = msgspec.field(default_factory=dict)


RobotFrame = StateUpdate | CommandResponse
ServerFrame = Welcome | Ack | CommandFrame | ErrorFrame

_robot_frame_decoder = msgspec.json.Decoder(RobotFrame)
_server_frame_decoder = msgspec.json.Decoder(ServerFrame)
_loose_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class FrameError(Exception):
    """A robot frame that failed to decode; ``code`` is stable across versions."""

    def __init__(self, code: str, message: str, seq: int | None, path: str | None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.seq = seq
        self.path = path

    def to_frame(self) -> ErrorFrame:
        details = {"path": self.path} if self.path else {}
        return ErrorFrame(
            code=self.code, message=self.message, seq=self.seq, details=details
        )


_PATH = re.compile(r" - at `(?P<path>[^`]*)`$")

# msgspec reports validation failures as text; these prefixes map them onto our
# stable codes. The first match wins.
_VALIDATION_CODES: tuple[tuple[str, str], ...] = (
    ("Invalid value", "unknown_message_type"),
    ("Object missing required field `type`", "unknown_message_type"),
    ("Expected `datetime` with a timezone", "timestamp_missing_timezone"),
    ("Number out of range", "number_out_of_range"),
    ("Object missing required field", "missing_field"),
    ("Object contains unknown field", "unknown_field"),
    ("Expected `float` >=", "value_out_of_range"),
    ("Expected `float` <=", "value_out_of_range"),
    ("Expected `int` >=", "value_out_of_range"),
    ("Expected `int` <=", "value_out_of_range"),
    ("Expected `str` of length", "value_out_of_range"),
    ("Expected `array` of length", "value_out_of_range"),
    ("Expected `str` matching regex", "invalid_character"),
)


def decode_robot_frame(raw: bytes | str) -> StateUpdate | CommandResponse:
    """Decode one robot frame, or raise :class:`FrameError` with a stable code."""
    try:
        return _robot_frame_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        path = match.group("path") if match else None
        code = _classify(text, path)
        raise FrameError(
            code, f"Invalid frame: {text}.", _peek_seq(raw), path
        ) from None
    except msgspec.DecodeError as exc:
        text = str(exc)
        message = (
            "Frame is truncated JSON."
            if "truncated" in text
            else f"Frame is not valid JSON: {text}."
        )
        raise FrameError("invalid_json", message, None, None) from None
    except RecursionError:
        # msgspec decodes nested arrays and objects recursively; a frame deep
        # enough to exhaust Python's recursion limit is rejected, not crashed on.
        raise FrameError(
            "nesting_too_deep", "Frame nests arrays or objects too deeply.", None, None
        ) from None


def _classify(text: str, path: str | None) -> str:
    if path == "$.type" or text.startswith("Object missing required field `type`"):
        return "unknown_message_type"
    for prefix, code in _VALIDATION_CODES:
        if text.startswith(prefix):
            return code
    return "invalid_type"


def _peek_seq(raw: bytes | str) -> int | None:
    """Return the frame's ``seq`` when it is a plain integer, else None."""
    try:
        value = _loose_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(value, dict):
        seq = value.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= MAX_SEQ:
            return seq
    return None


def encode(frame: msgspec.Struct | dict[str, Any]) -> bytes:
    """Encode a frame or payload as strict JSON."""
    return _encoder.encode(frame)


def decode_server_frame(raw: bytes | str) -> Welcome | Ack | CommandFrame | ErrorFrame:
    """Decode a frame the server sent; used by the robot client."""
    return _server_frame_decoder.decode(raw)
