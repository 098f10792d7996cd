"""Filters of the operator stream: robots, event types, severity and state rate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fleethub.errors import InvalidInput
from fleethub.ids import validate_robot_id
from fleethub.models import Severity
from fleethub.rules.loader import validation_problems

SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
MAX_FILTER_ITEMS = 1000

EventTypeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class StreamFilters(BaseModel):
    """Filters of one subscriber; an empty list means "all"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    robot_ids: list[str] = Field(default_factory=list, max_length=MAX_FILTER_ITEMS)
    event_types: list[EventTypeName] = Field(
        default_factory=list, max_length=MAX_FILTER_ITEMS
    )
    min_severity: Severity = Severity.INFO
    states: bool = True
    events: bool = True
    state_rate_hz: float | None = Field(
        None, gt=0, le=1000, description="Maximum state updates per robot per second."
    )
    batch_ms: int = Field(
        0,
        ge=0,
        le=10_000,
        description="On /ws/fleet, send what arrived as one 'batch' frame at most "
        "every this many milliseconds, at multiples of it on the server's clock; "
        "0 sends each message as its own frame.",
    )

    @field_validator("robot_ids")
    @classmethod
    def _valid_robot_ids(cls, value: list[str]) -> list[str]:
        return [validate_robot_id(robot_id) for robot_id in value]

    def wants_state(self, robot_id: str | None) -> bool:
        if not self.states:
            return False
        return not self.robot_ids or robot_id in self.robot_ids

    def wants_event(
        self, event_type: str | None, robot_id: str | None, severity: str | None
    ) -> bool:
        if not self.events:
            return False
        if self.robot_ids and robot_id not in self.robot_ids:
            return False
        if self.event_types and event_type not in self.event_types:
            return False
        # Severity is a StrEnum, so its members look up by their plain strings.
        rank = SEVERITY_RANK.get(severity or Severity.INFO, 0)  # type: ignore[call-overload]
        return rank >= SEVERITY_RANK[self.min_severity]


class SubscribeMessage(StreamFilters):
    """A client's ``{"type": "subscribe", ...}`` message, replacing its filters."""

    type: Literal["subscribe"]


def parse_filters(values: Mapping[str, Any], source: str) -> StreamFilters:
    """Validate filters, or raise :class:`InvalidInput` listing the problems."""
    try:
        if source == "message":
            message = SubscribeMessage.model_validate(values)
            return StreamFilters(**message.model_dump(exclude={"type"}))
        return StreamFilters.model_validate(values)
    except InvalidInput:
        raise
    except ValidationError as exc:
        raise InvalidInput(
            f"Stream filters in the {source} are invalid.",
            code="invalid_subscription",
            problems=validation_problems(exc),
        ) from None


def query_values(params: Mapping[str, str], lists: Mapping[str, Sequence[str]]) -> dict:
    """Turn query parameters into filter values; lists may repeat or use commas."""
    values: dict[str, Any] = {}
    for name in ("robot_ids", "event_types"):
        items = [item for raw in lists.get(name, ()) for item in raw.split(",")]
        if items:
            values[name] = [item for item in items if item]
    for name in ("min_severity", "states", "events", "state_rate_hz", "batch_ms"):
        if name in params:
            values[name] = params[name]
    unknown = set(params) - set(StreamFilters.model_fields)
    if unknown:
        raise InvalidInput(
            f"Unknown stream filter(s): {', '.join(sorted(unknown))}.",
            code="invalid_subscription",
            allowed=sorted(StreamFilters.model_fields),
        )
    return values
