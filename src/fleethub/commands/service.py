"""The command lifecycle: store first, deliver, track the robot's responses.

A command is stored as ``queued`` before anything is sent. It is delivered at
once when the robot is connected, otherwise when the robot next connects,
highest priority first and in creation order within a priority. A command
that the robot has not acknowledged within ``command_ack_timeout_s`` is queued
again and resent with the same id (at least once delivery: the robot drops
duplicates by id). Every status change is stored with its time and published
as a ``command_<status>`` event.

Per robot, delivery and response handling run under one lock, so a response
never overtakes the ``sent`` transition of its own delivery in this process.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from fleethub.commands.router import CommandRouter
from fleethub.commands.store import (
    Command,
    CommandStatus,
    CommandStore,
    DuplicateIdempotencyKey,
    Transition,
)
from fleethub.commands.validation import validate_command
from fleethub.errors import Conflict, InvalidInput, NotFound
from fleethub.models import Event, Severity, utcnow
from fleethub.protocol import CommandResult
from fleethub.settings import Settings

logger = logging.getLogger(__name__)

Emit = Callable[[Event], Awaitable[None]]
# Called with the command after each of its transitions; must not block.
CommandObserver = Callable[[Command], None]

Q, S, A = CommandStatus.QUEUED, CommandStatus.SENT, CommandStatus.ACKNOWLEDGED
_WARNING_STATUSES = {
    CommandStatus.FAILED,
    CommandStatus.REJECTED,
    CommandStatus.EXPIRED,
}


class CommandService:
    """Create, deliver, resend, expire and cancel commands."""

    def __init__(
        self,
        store: CommandStore,
        router: CommandRouter,
        emit: Emit,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.router = router
        self.settings = settings
        self.clock = clock
        self.observers: list[CommandObserver] = []
        self._emit = emit
        self._locks: dict[str, asyncio.Lock] = {}

    async def submit(
        self,
        robot_id: str,
        command_type: str,
        params: dict[str, Any],
        *,
        priority: int = 0,
        ttl_s: float | None = None,
        idempotency_key: str | None = None,
        mission_id: str | None = None,
    ) -> tuple[Command, bool]:
        """Store a command and try to deliver it; return it and whether it is new.

        A repeated ``idempotency_key`` returns the robot's existing command
        unchanged when type, parameters and priority match, and raises
        :class:`Conflict` (``idempotency_key_reused``) when they differ.
        """
        validate_command(command_type, params)
        ttl_s = self._check_ttl(ttl_s)
        if idempotency_key is not None:
            existing = await self.store.find_by_idempotency_key(
                robot_id, idempotency_key
            )
            if existing is not None:
                return _same_request(existing, command_type, params, priority), False
        if not await self.store.robot_exists(robot_id):
            raise NotFound(
                f"Robot {robot_id!r} is not known; it must connect once before "
                "it can be sent commands.",
                code="robot_not_found",
                robot_id=robot_id,
            )
        now = self.clock()
        command = Command(
            command_id=str(uuid.uuid4()),
            robot_id=robot_id,
            type=command_type,
            params=params,
            priority=priority,
            status=Q,
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
            idempotency_key=idempotency_key,
            mission_id=mission_id,
        )
        try:
            command = await self.store.insert_command(command)
        except DuplicateIdempotencyKey:
            # A concurrent POST with the same key won the insert.
            assert idempotency_key is not None
            existing = await self.store.find_by_idempotency_key(
                robot_id, idempotency_key
            )
            assert existing is not None
            return _same_request(existing, command_type, params, priority), False
        await self._changed(command)
        await self.deliver_pending(robot_id)
        return await self.get(command.command_id), True

    def _check_ttl(self, ttl_s: float | None) -> float:
        if ttl_s is None:
            return self.settings.command_default_ttl_s
        if not 0 < ttl_s <= self.settings.command_max_ttl_s:
            raise InvalidInput(
                f"ttl_s = {ttl_s} must be above 0 and at most "
                f"{self.settings.command_max_ttl_s:g} s.",
                code="invalid_ttl",
            )
        return ttl_s

    async def get(self, command_id: str) -> Command:
        """Return the command, or raise :class:`NotFound` (``command_not_found``)."""
        command = await self.store.get_command(command_id)
        if command is None:
            raise NotFound(
                f"Command {command_id!r} is not known.",
                code="command_not_found",
                command_id=command_id,
            )
        return command

    async def history(self, command_id: str) -> list[Transition]:
        """Return the command's transitions, oldest first."""
        return await self.store.transitions("command", command_id)

    async def list_for_robot(
        self,
        robot_id: str,
        statuses: Sequence[CommandStatus] = (),
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[Command]:
        """Return the robot's commands, newest first."""
        return await self.store.list_commands(
            robot_id, statuses=statuses, limit=limit, before_seq=before_seq
        )

    async def cancel(self, command_id: str, reason: str = "Cancelled.") -> Command:
        """Cancel a command the robot has not accepted yet.

        Raises :class:`Conflict`: ``command_in_progress`` once the robot has
        acknowledged it (send ``stop`` instead), ``command_already_finished``
        when it is over. A ``sent`` command may already be on the robot: it is
        not recalled, and the robot's later responses to it are rejected with
        ``command_already_finished``.
        """
        command = await self.get(command_id)
        async with self._lock(command.robot_id):
            cancelled = await self.store.transition(
                command_id, (Q, S), CommandStatus.CANCELLED, self.clock(), reason
            )
        if cancelled is not None:
            await self._changed(cancelled)
            return cancelled
        return _cannot_cancel(await self.get(command_id))

    async def deliver_pending(self, robot_id: str) -> int:
        """Deliver the robot's queued commands in order; return how many were sent.

        Stops at the first command the router cannot deliver, because the
        robot is then not connected to a reachable process.
        """
        sent: list[Command] = []
        async with self._lock(robot_id):
            for command in await self.store.deliverable(robot_id, self.clock()):
                if not await self.router.deliver(robot_id, command.payload()):
                    break
                updated = await self.store.transition(
                    command.command_id, (Q,), S, self.clock(), sent=True
                )
                if updated is not None:
                    sent.append(updated)
        for command in sent:
            await self._changed(command)
        return len(sent)

    async def handle_response(self, robot_id: str, result: CommandResult) -> None:
        """Apply a robot's ``command_response``, or raise a structured error.

        Raises :class:`NotFound` (``unknown_command``) for an id this robot was
        never sent, and :class:`Conflict` for a status the command already has
        (``duplicate_command_response``) or a command that is already over
        (``command_already_finished``). Nothing changes in either case.
        """
        target = CommandStatus(result.status)
        async with self._lock(robot_id):
            command = await self.store.get_command(result.command_id)
            _check_response(robot_id, result, command, target)
            allowed = (Q, S) if target is A else (Q, S, A)
            updated = await self.store.transition(
                result.command_id, allowed, target, self.clock(), result.message
            )
        if updated is None:
            raise Conflict(
                f"Command {result.command_id!r} changed while the response was "
                "applied; the response was ignored.",
                code="command_state_changed",
                command_id=result.command_id,
            )
        await self._changed(updated, result=result.result)

    async def sweep(self, now: datetime | None = None) -> None:
        """Expire, resend and deliver what the timers and lost messages left behind.

        Expires queued commands past their time to live, requeues (or fails)
        unacknowledged ones, and delivers queued commands of robots whose link
        is in this process.

        The background lifecycle task calls this with the current time; tests
        call it with a later time instead of waiting.

        NOTE: an ``acknowledged`` command has no timeout yet. A robot that
        accepts a command and never reports its outcome leaves it
        ``acknowledged`` until an operator acts.
        """
        now = now or self.clock()
        for command in await self.store.due_for_expiry(now):
            await self._move(
                command, (Q,), CommandStatus.EXPIRED, now, "Time to live ran out."
            )
        timeout = timedelta(seconds=self.settings.command_ack_timeout_s)
        robots: set[str] = set()
        for command in await self.store.unacknowledged(now - timeout):
            if await self._retry_or_give_up(command, now):
                robots.add(command.robot_id)
        # A command queued while its robot was connected elsewhere, or whose
        # forward over the bus was lost, waits here for the process that holds
        # the link.
        for robot_id in await self.store.robots_with_queued(now):
            if self.router.holds(robot_id):
                robots.add(robot_id)
        for robot_id in sorted(robots):
            await self.deliver_pending(robot_id)

    async def _retry_or_give_up(self, command: Command, now: datetime) -> bool:
        """Queue an unacknowledged command again; return whether it was requeued."""
        if command.attempts >= self.settings.command_max_attempts:
            message = f"Not acknowledged after {command.attempts} sends."
            await self._move(command, (S,), CommandStatus.FAILED, now, message)
            return False
        if command.expires_at is not None and command.expires_at <= now:
            message = (
                "Sent but not acknowledged before it expired; the robot may have "
                "received it."
            )
            await self._move(command, (S,), CommandStatus.EXPIRED, now, message)
            return False
        message = (
            f"Not acknowledged within {self.settings.command_ack_timeout_s:g} s; "
            "queued for resending."
        )
        logger.warning(
            "command_requeued",
            extra={
                "command_id": command.command_id,
                "robot_id": command.robot_id,
                "attempts": command.attempts,
            },
        )
        return await self._move(command, (S,), Q, now, message)

    async def _move(
        self,
        command: Command,
        from_statuses: tuple[CommandStatus, ...],
        to_status: CommandStatus,
        now: datetime,
        message: str,
    ) -> bool:
        async with self._lock(command.robot_id):
            updated = await self.store.transition(
                command.command_id, from_statuses, to_status, now, message
            )
        if updated is None:
            return False
        await self._changed(updated)
        return True

    async def _changed(
        self, command: Command, result: dict[str, Any] | None = None
    ) -> None:
        """Publish the command's new status and tell the observers."""
        data: dict[str, Any] = {
            "command_id": command.command_id,
            "command_type": command.type,
            "status": command.status.value,
            "attempts": command.attempts,
            "message": command.message,
        }
        if command.mission_id is not None:
            data["mission_id"] = command.mission_id
        if result is not None:
            data["result"] = result
        severity = (
            Severity.WARNING if command.status in _WARNING_STATUSES else Severity.INFO
        )
        await self._emit(
            Event(
                type=f"command_{command.status.value}",
                robot_id=command.robot_id,
                severity=severity,
                timestamp=command.updated_at,
                data=data,
            )
        )
        for observer in self.observers:
            observer(command)

    def _lock(self, robot_id: str) -> asyncio.Lock:
        lock = self._locks.get(robot_id)
        if lock is None:
            lock = self._locks[robot_id] = asyncio.Lock()
        return lock


def _same_request(
    existing: Command, command_type: str, params: dict[str, Any], priority: int
) -> Command:
    if (existing.type, existing.params, existing.priority) != (
        command_type,
        params,
        priority,
    ):
        raise Conflict(
            f"Idempotency key {existing.idempotency_key!r} was already used for a "
            f"different command ({existing.command_id}); use a new key.",
            code="idempotency_key_reused",
            command_id=existing.command_id,
        )
    return existing


def _check_response(
    robot_id: str,
    result: CommandResult,
    command: Command | None,
    target: CommandStatus,
) -> None:
    if command is None or command.robot_id != robot_id:
        raise NotFound(
            f"Command {result.command_id!r} was never sent to robot {robot_id!r}.",
            code="unknown_command",
            command_id=result.command_id,
        )
    if command.status is target:
        raise Conflict(
            f"Command {result.command_id!r} is already {target.value}; the "
            "duplicate response was ignored.",
            code="duplicate_command_response",
            command_id=result.command_id,
        )
    if command.status.finished:
        raise Conflict(
            f"Command {result.command_id!r} is already {command.status.value}; "
            f"the {target.value!r} response was ignored.",
            code="command_already_finished",
            command_id=result.command_id,
            status=command.status.value,
        )


def _cannot_cancel(command: Command) -> Command:
    if command.status is A:
        raise Conflict(
            f"Command {command.command_id!r} was already accepted by the robot; "
            "send a 'stop' command to interrupt it.",
            code="command_in_progress",
            command_id=command.command_id,
        )
    raise Conflict(
        f"Command {command.command_id!r} is already {command.status.value}.",
        code="command_already_finished",
        command_id=command.command_id,
        status=command.status.value,
    )
