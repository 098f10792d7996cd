"""The SQL behind robot health: one grouped query per figure, for one robot or all.

Every query runs in the database and returns one row per robot, so the fleet
view costs the same number of round trips for ten robots as for a thousand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, case, func, literal_column, select
from sqlalchemy.sql.expression import ColumnClause, Executable

from fleethub.storage.schema import events, robots, telemetry
from fleethub.storage.sql import SqlStorage

CONNECTION_EVENTS = ("robot_connected", "robot_disconnected")
# Events that mean the robot itself reported a fault.
ROBOT_ERROR_EVENTS = ("error_occurred",)

_EPOCH_SQL = {
    "sqlite": "((julianday(telemetry.ts) - 2440587.5) * 86400.0)",
    "postgresql": "extract(epoch from telemetry.ts)",
}


@dataclass
class TelemetryFigures:
    """One robot's telemetry in the health window."""

    recent_samples: int
    last_timestamp: datetime | None
    battery_samples: int
    battery_slope_per_h: float | None


@dataclass
class ConnectionHistory:
    """Connect and disconnect events in the window, and the state before it."""

    connected_at_start: bool
    changes: list[tuple[str, datetime]]


def _utc(value: Any) -> datetime | None:
    """Read a timestamp that SQLite may return as naive or as text."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


SelectT = TypeVar("SelectT", bound=Select[Any])


def _required_utc(value: Any) -> datetime:
    """Read a timestamp from a NOT NULL column."""
    result = _utc(value)
    if result is None:
        raise ValueError("Timestamp column returned NULL.")
    return result


def _for_robot(query: SelectT, column: Any, robot_id: str | None) -> SelectT:
    return query if robot_id is None else query.where(column == robot_id)


class HealthQueries:
    """Read the figures robot health needs from the database."""

    def __init__(self, storage: SqlStorage) -> None:
        self.storage = storage
        self._epoch: ColumnClause[Any] = literal_column(_EPOCH_SQL[storage.dialect])

    async def _rows(self, query: Executable) -> Sequence[Any]:
        return await self.storage.fetch(query)

    async def created_at(self, robot_id: str | None) -> dict[str, datetime]:
        """Return when each robot was first seen."""
        query = _for_robot(
            select(robots.c.robot_id, robots.c.created_at), robots.c.robot_id, robot_id
        )
        return {row[0]: _required_utc(row[1]) for row in await self._rows(query)}

    async def telemetry(
        self, robot_id: str | None, start: datetime, rate_start: datetime
    ) -> dict[str, TelemetryFigures]:
        """Return sample counts, the newest timestamp and the battery slope.

        The slope is an ordinary least-squares fit of battery percent against
        hours since ``start``, computed from sums so that SQLite and PostgreSQL
        share one query.
        """
        hours = (self._epoch - start.timestamp()) / 3600.0
        has_battery = telemetry.c.battery.is_not(None)
        query = select(
            telemetry.c.robot_id,
            func.sum(case((telemetry.c.ts >= rate_start, 1), else_=0)),
            func.max(telemetry.c.ts),
            func.count(telemetry.c.battery),
            func.sum(case((has_battery, hours))),
            func.sum(telemetry.c.battery),
            func.sum(case((has_battery, hours * telemetry.c.battery))),
            func.sum(case((has_battery, hours * hours))),
        ).where(telemetry.c.ts >= start)
        query = _for_robot(query, telemetry.c.robot_id, robot_id)
        rows = await self._rows(query.group_by(telemetry.c.robot_id))
        return {row[0]: _telemetry_figures(row) for row in rows}

    async def robot_errors(
        self, robot_id: str | None, start: datetime
    ) -> dict[str, int]:
        """Return how many fault events each robot reported since ``start``."""
        query = select(events.c.robot_id, func.count()).where(
            and_(events.c.type.in_(ROBOT_ERROR_EVENTS), events.c.ts >= start)
        )
        query = _for_robot(query, events.c.robot_id, robot_id)
        rows = await self._rows(query.group_by(events.c.robot_id))
        return {row[0]: int(row[1]) for row in rows}

    async def connections(
        self, robot_id: str | None, start: datetime
    ) -> dict[str, ConnectionHistory]:
        """Return each robot's connection changes since ``start``, oldest first."""
        histories = {
            robot: ConnectionHistory(state == "robot_connected", [])
            for robot, state in (await self._state_before(robot_id, start)).items()
        }
        query = select(events.c.robot_id, events.c.type, events.c.ts).where(
            and_(events.c.type.in_(CONNECTION_EVENTS), events.c.ts >= start)
        )
        query = _for_robot(query, events.c.robot_id, robot_id).order_by(events.c.id)
        for robot, event_type, ts in await self._rows(query):
            history = histories.setdefault(robot, ConnectionHistory(False, []))
            history.changes.append((event_type, _required_utc(ts)))
        return histories

    async def _state_before(
        self, robot_id: str | None, start: datetime
    ) -> dict[str, str]:
        latest = select(func.max(events.c.id)).where(
            and_(events.c.type.in_(CONNECTION_EVENTS), events.c.ts < start)
        )
        latest = _for_robot(latest, events.c.robot_id, robot_id).group_by(
            events.c.robot_id
        )
        query = select(events.c.robot_id, events.c.type).where(events.c.id.in_(latest))
        return {row[0]: row[1] for row in await self._rows(query)}


def _telemetry_figures(row: Any) -> TelemetryFigures:
    _, recent, last, n, sum_x, sum_y, sum_xy, sum_xx = row
    slope = None
    if n >= 2:
        denominator = n * sum_xx - sum_x * sum_x
        if denominator > 1e-12:
            slope = (n * sum_xy - sum_x * sum_y) / denominator
    return TelemetryFigures(int(recent or 0), _utc(last), int(n), slope)
