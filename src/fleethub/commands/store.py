"""Command records and the storage interface the command service needs.

A command moves through these states, and each arrow is one stored transition::

    queued ──▶ sent ──▶ acknowledged ──▶ succeeded | failed | rejected
      │  ▲       │
      │  └───────┤  (not acknowledged within the timeout: queued again)
      ▼          ▼
    expired | cancelled          succeeded | failed | rejected | cancelled

A robot may skip ``acknowledged`` and report its outcome directly, and a
response may overtake the ``sent`` transition of a multi-process router, so
responses are accepted from ``queued`` and ``sent`` as well.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec

from fleethub.errors import Conflict


class CommandStatus(enum.StrEnum):
    """The lifecycle state of a command."""

    QUEUED = "queued"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether no further transition is possible."""
        return self in FINISHED_COMMAND_STATUSES


FINISHED_COMMAND_STATUSES = frozenset(
    {
        CommandStatus.SUCCEEDED,
        CommandStatus.FAILED,
        CommandStatus.REJECTED,
        CommandStatus.EXPIRED,
        CommandStatus.CANCELLED,
    }
)


class Transition(msgspec.Struct, kw_only=True):
    """One stored status change of a command or mission."""

    from_status: str | None
    to_status: str
    at: datetime
    message: str | None = None


class Command(msgspec.Struct, kw_only=True):
    """A stored command.

    A higher ``priority`` is delivered first, and ``seq`` is the creation order.
    """

    command_id: str
    robot_id: str
    type: str
    params: dict[str, Any]
    priority: int
    status: CommandStatus
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    seq: int = 0
    expires_at: datetime | None = None
    sent_at: datetime | None = None
    idempotency_key: str | None = None
    mission_id: str | None = None
    message: str | None = None

    def payload(self) -> dict[str, Any]:
        """Return the ``command`` frame data the robot receives."""
        payload: dict[str, Any] = {
            "command_id": self.command_id,
            "type": self.type,
            "params": self.params,
            "priority": self.priority,
            "created_at": self.created_at.isoformat(),
        }
        if self.expires_at is not None:
            payload["expires_at"] = self.expires_at.isoformat()
        if self.mission_id is not None:
            payload["mission_id"] = self.mission_id
        return payload


class CommandStore(Protocol):
    """Durable commands and their transitions.

    Every state change is a compare-and-set: it names the states it may leave,
    and returns None when the command is in none of them, so two processes
    racing on one command never both win.
    """

    async def robot_exists(self, robot_id: str) -> bool:
        """Return whether the robot has ever connected."""

    async def insert_command(self, command: Command) -> Command:
        """Store a new command with a ``queued`` transition; return it with ``seq``.

        Raises :class:`DuplicateIdempotencyKey` when the robot already has a
        command with the same idempotency key.
        """

    async def get_command(self, command_id: str) -> Command | None:
        """Return the command, or None when the id is unknown."""

    async def find_by_idempotency_key(self, robot_id: str, key: str) -> Command | None:
        """Return the robot's command posted with ``key``, if any."""

    async def list_commands(
        self,
        robot_id: str,
        *,
        statuses: Sequence[CommandStatus] = (),
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[Command]:
        """Return the robot's commands, newest first; ``before_seq`` is the cursor."""

    async def deliverable(self, robot_id: str, now: datetime) -> list[Command]:
        """Return queued, unexpired commands by priority (high first), then ``seq``."""

    async def robots_with_queued(self, now: datetime) -> list[str]:
        """Return the ids of robots that have queued, unexpired commands."""

    async def transition(
        self,
        command_id: str,
        from_statuses: Sequence[CommandStatus],
        to_status: CommandStatus,
        at: datetime,
        message: str | None = None,
        *,
        sent: bool = False,
    ) -> Command | None:
        """Move the command to ``to_status`` if it is in one of ``from_statuses``.

        ``sent`` also sets ``sent_at`` and counts one more delivery attempt.
        """

    async def due_for_expiry(self, now: datetime) -> list[Command]:
        """Return queued commands whose ``expires_at`` is at or before ``now``."""

    async def unacknowledged(self, sent_before: datetime) -> list[Command]:
        """Return ``sent`` commands whose last send is at or before ``sent_before``."""

    async def transitions(self, subject: str, subject_id: str) -> list[Transition]:
        """Return the transitions of a command or mission, oldest first."""


class DuplicateIdempotencyKey(Conflict):
    """An insert that clashed with an existing command's idempotency key."""

    code = "duplicate_idempotency_key"
