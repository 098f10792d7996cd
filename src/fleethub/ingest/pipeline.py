"""The ingest pipeline: one accepted robot state, end to end.

For each state the pipeline checks the time policy, queues the row for the
telemetry writer (which acknowledges after commit), updates the live state,
runs the rules and publishes the state on the bus. Nothing here waits on the
database or on a subscriber.

Time policy, applied to every state:

- a timestamp must carry a time zone (enforced by the decoder);
- it may be at most ``max_future_skew_s`` ahead of the server clock;
- it must be later than the robot's last accepted state. A state with exactly
  the same timestamp is a resend of one already accepted: it is acknowledged
  again and not stored twice. An older one is rejected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import msgspec

from fleethub.bus.base import EVENTS, STATES, EventBus
from fleethub.errors import InvalidInput, Overloaded
from fleethub.ingest.writer import AckTarget, BatchWriter
from fleethub.live.base import LiveState
from fleethub.models import Event, TelemetryRow, utcnow
from fleethub.protocol import RobotState, StateUpdate, encode
from fleethub.rules.engine import RuleEngine
from fleethub.settings import Settings
from fleethub.storage.base import Storage

logger = logging.getLogger(__name__)

EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)

StateObserver = Callable[[str, RobotState], None]


class RobotConnection(AckTarget, Protocol):
    """The link a state arrived on, as the pipeline uses it."""

    robot_id: str


class StateMessage(msgspec.Struct, tag="state_update", tag_field="type"):
    """A state as published on the bus and streamed to operators."""

    robot_id: str
    data: RobotState


class EventMessage(msgspec.Struct, tag="event", tag_field="type"):
    """An event as published on the bus and streamed to operators."""

    data: Event


class IngestStats:
    """Counters read by the metrics endpoint and the benchmarks."""

    def __init__(self) -> None:
        self.accepted = 0
        self.duplicates = 0
        self.rejected: dict[str, int] = {}
        self.events: dict[str, int] = {}
        # Called with the error code after each rejection. The transport binds
        # the robot id, where there is one, in the log context.
        self.on_rejection: Callable[[str], None] | None = None

    def count_rejection(self, code: str) -> None:
        self.rejected[code] = self.rejected.get(code, 0) + 1
        if self.on_rejection is not None:
            self.on_rejection(code)


class IngestPipeline:
    """Accept robot states and raise the events they imply."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        live: LiveState,
        bus: EventBus,
        telemetry_writer: BatchWriter[TelemetryRow],
        event_writer: BatchWriter[Event],
        rules: RuleEngine,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.live = live
        self.bus = bus
        self.telemetry_writer = telemetry_writer
        self.event_writer = event_writer
        self.rules = rules
        self.clock = clock
        self.stats = IngestStats()
        # Called with every emitted event; listeners must not block.
        self.event_listeners: list[Callable[[Event], None]] = []
        self._max_skew = timedelta(seconds=settings.max_future_skew_s)
        self._last_timestamp: dict[str, datetime] = {}
        # Called with (robot_id, state) after each accepted state; must not block.
        self.state_observers: list[StateObserver] = []

    async def open_robot(self, robot_id: str, timeout: float = 10.0) -> datetime | None:
        """Prepare for a robot's states; return the timestamp of its newest stored one.

        Waits until the writer has stored what it already holds, so the returned
        timestamp covers every state accepted before this call.
        """
        await self.storage.ensure_robot(robot_id, self.clock())
        await asyncio.wait_for(self.telemetry_writer.wait_for_space(), timeout)
        await self.telemetry_writer.barrier(timeout)
        last = await self.storage.last_telemetry_time(robot_id)
        if last is not None:
            self._last_timestamp[robot_id] = last
        return last

    def close_robot(self, robot_id: str) -> None:
        """Forget per-robot rule state; the last timestamp stays for a reconnect."""
        self.rules.forget(robot_id)

    async def handle_state(
        self, connection: RobotConnection, update: StateUpdate
    ) -> None:
        """Accept one state, or raise :class:`InvalidInput` naming the broken rule."""
        robot_id = connection.robot_id
        state = update.data
        # One clock read serves the time checks and the live state.
        now = self.clock()
        self._check(robot_id, state, now)
        timestamp = state.timestamp
        last = self._last_timestamp.get(robot_id)
        if last is not None and timestamp <= last:
            if timestamp == last:
                self.stats.duplicates += 1
                self.telemetry_writer.submit(None, connection, update.seq)
                return
            raise InvalidInput(
                f"Timestamp {timestamp.isoformat()} is older than the last accepted "
                f"state ({last.isoformat()}); states must be sent in time order.",
                code="timestamp_out_of_order",
                last_accepted=last.isoformat(),
            )
        self.telemetry_writer.submit(
            TelemetryRow.from_state(robot_id, state), connection, update.seq
        )
        self._last_timestamp[robot_id] = timestamp
        self.stats.accepted += 1
        await self.live.update(robot_id, state, now)
        for event in self.rules.evaluate(robot_id, state):
            await self.emit(event)
        # Encoding the bus message is a good part of a state's cost; skip it
        # when no subscriber would receive it.
        if self.bus.wants(STATES):
            await self.bus.publish(
                STATES, encode(StateMessage(robot_id=robot_id, data=state))
            )
        for observer in self.state_observers:
            observer(robot_id, state)

    def _check(self, robot_id: str, state: RobotState, now: datetime) -> None:
        if state.robot_id is not None and state.robot_id != robot_id:
            raise InvalidInput(
                f"State names robot {state.robot_id[:64]!r} but this connection is "
                f"for {robot_id!r}.",
                code="robot_id_mismatch",
            )
        if state.timestamp > now + self._max_skew:
            raise InvalidInput(
                f"Timestamp {state.timestamp.isoformat()} is more than "
                f"{self.settings.max_future_skew_s:g} s ahead of the server clock; "
                "check the robot's clock (NTP).",
                code="timestamp_in_future",
            )
        if state.timestamp < EARLIEST_TIMESTAMP:
            raise InvalidInput(
                f"Timestamp {state.timestamp.isoformat()} is before "
                f"{EARLIEST_TIMESTAMP.date().isoformat()}; "
                "the robot's clock is not set.",
                code="timestamp_out_of_range",
            )
        if (
            state.lidar is not None
            and len(state.lidar.ranges) > self.settings.max_lidar_beams
        ):
            raise InvalidInput(
                f"Scan has {len(state.lidar.ranges)} beams; the limit is "
                f"{self.settings.max_lidar_beams}.",
                code="too_many_beams",
            )

    async def emit(self, event: Event) -> None:
        """Store and publish an event.

        When the event buffer is full (the database has been down for long) the
        event is still published but not stored, and the loss is logged.
        """
        self.stats.events[event.type] = self.stats.events.get(event.type, 0) + 1
        try:
            self.event_writer.submit(event)
        except Overloaded:
            logger.error(
                "event_not_stored",
                extra={"event_type": event.type, "robot_id": event.robot_id},
            )
        await self.bus.publish(EVENTS, encode(EventMessage(data=event)))
        for listener in self.event_listeners:
            listener(event)
