"""The storage interface the core depends on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from fleethub.models import Analytics, Event, StoredEvent, TelemetryRow


class Storage(Protocol):
    """Durable storage for robots, telemetry and events.

    Implementations are safe to call concurrently from one event loop. Every
    method raises :class:`fleethub.errors.StorageUnavailable` when the database
    cannot be reached, so callers can retry without knowing the driver.
    """

    async def close(self) -> None:
        """Release connections; the object is unusable afterwards."""

    async def ping(self) -> None:
        """Round-trip to the database, raising when it is unreachable."""

    async def ensure_robot(self, robot_id: str, seen_at: datetime) -> None:
        """Create the robot row if missing and record when it was last seen."""

    async def robot_ids(self) -> list[str]:
        """Return every known robot id, sorted."""

    async def write_telemetry(self, rows: Sequence[TelemetryRow]) -> None:
        """Store rows in one transaction: all of them or none."""

    async def latest_telemetry(self, robot_id: str) -> TelemetryRow | None:
        """Return the robot's newest stored row, or None."""

    async def last_telemetry_time(self, robot_id: str) -> datetime | None:
        """Return the timestamp of the robot's newest stored state."""

    async def telemetry(
        self,
        robot_id: str,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        after: datetime | None = None,
    ) -> list[TelemetryRow]:
        """Return up to ``limit`` rows in ``[start, end)`` ordered by time.

        ``after`` is the cursor: only rows strictly later than it are returned.
        """

    async def count_telemetry(self, robot_id: str | None = None) -> int:
        """Count stored telemetry rows, for one robot or all."""

    async def analytics(
        self,
        robot_id: str,
        start: datetime | None,
        end: datetime | None,
        max_gap_s: float,
    ) -> Analytics:
        """Aggregate the robot's telemetry in ``[start, end)`` inside the database.

        Gaps between consecutive samples longer than ``max_gap_s`` do not count
        towards operating time.
        """

    async def write_events(self, events: Sequence[Event]) -> None:
        """Store events in one transaction."""

    async def events(
        self,
        *,
        robot_id: str | None = None,
        event_type: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[StoredEvent]:
        """Return matching events, newest first; ``before_id`` is the cursor."""

    async def event_counts(self) -> dict[str, int]:
        """Return the number of stored events per type."""
