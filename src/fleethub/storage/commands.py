"""Commands and status transitions on SQLAlchemy: SQLite and PostgreSQL.

Status changes are compare-and-set updates (``WHERE status = <the status
just read>``) in the same transaction as their transition row. The history
therefore always matches the current status, and concurrent writers cannot
both move one command.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Row, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from fleethub.commands.store import (
    Command,
    CommandStatus,
    DuplicateIdempotencyKey,
    Transition,
)
from fleethub.storage.schema import commands, robots, transitions
from fleethub.storage.sql import SqlStorage, _utc

COMMAND = "command"


async def record_transition(
    conn: AsyncConnection,
    subject: str,
    subject_id: str,
    from_status: str | None,
    to_status: str,
    at: datetime,
    message: str | None,
) -> None:
    """Insert one transition row inside the caller's transaction."""
    await conn.execute(
        insert(transitions).values(
            subject=subject,
            subject_id=subject_id,
            from_status=from_status,
            to_status=to_status,
            at=at,
            message=message,
        )
    )


class SqlCommandStore:
    """:class:`fleethub.commands.store.CommandStore` on the storage's engine."""

    def __init__(self, storage: SqlStorage) -> None:
        # Shares the engine and the outage translation of the core storage.
        self._connect = storage._connect

    async def robot_exists(self, robot_id: str) -> bool:
        query = select(exists().where(robots.c.robot_id == robot_id))
        async with self._connect() as conn:
            return bool((await conn.execute(query)).scalar())

    async def insert_command(self, command: Command) -> Command:
        values = _command_values(command)
        try:
            async with self._connect(write=True) as conn:
                result = await conn.execute(insert(commands).values(**values))
                await record_transition(
                    conn,
                    COMMAND,
                    command.command_id,
                    None,
                    command.status,
                    command.created_at,
                    None,
                )
        except IntegrityError as exc:
            raise DuplicateIdempotencyKey(
                f"Robot {command.robot_id!r} already has a command with "
                f"idempotency key {command.idempotency_key!r}.",
                robot_id=command.robot_id,
            ) from exc
        seq = result.inserted_primary_key[0]
        return _replace(command, seq=int(seq))

    async def get_command(self, command_id: str) -> Command | None:
        query = select(commands).where(commands.c.command_id == command_id)
        return await self._one(query)

    async def find_by_idempotency_key(self, robot_id: str, key: str) -> Command | None:
        query = select(commands).where(
            commands.c.robot_id == robot_id, commands.c.idempotency_key == key
        )
        return await self._one(query)

    async def list_commands(
        self,
        robot_id: str,
        *,
        statuses: Sequence[CommandStatus] = (),
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[Command]:
        query = select(commands).where(commands.c.robot_id == robot_id)
        if statuses:
            query = query.where(commands.c.status.in_([str(s) for s in statuses]))
        if before_seq is not None:
            query = query.where(commands.c.seq < before_seq)
        return await self._many(query.order_by(commands.c.seq.desc()).limit(limit))

    async def deliverable(self, robot_id: str, now: datetime) -> list[Command]:
        query = (
            select(commands)
            .where(
                commands.c.robot_id == robot_id,
                commands.c.status == CommandStatus.QUEUED,
                (commands.c.expires_at.is_(None)) | (commands.c.expires_at > now),
            )
            .order_by(commands.c.priority.desc(), commands.c.seq)
        )
        return await self._many(query)

    async def robots_with_queued(self, now: datetime) -> list[str]:
        query = (
            select(commands.c.robot_id)
            .where(
                commands.c.status == CommandStatus.QUEUED,
                (commands.c.expires_at.is_(None)) | (commands.c.expires_at > now),
            )
            .distinct()
            .order_by(commands.c.robot_id)
        )
        async with self._connect() as conn:
            return list((await conn.execute(query)).scalars())

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
        values: dict[str, Any] = {"status": to_status, "updated_at": at}
        if message is not None:
            values["message"] = message
        if sent:
            values["sent_at"] = at
            values["attempts"] = commands.c.attempts + 1
        from_status = await self._status(command_id)
        if from_status is None or from_status not in from_statuses:
            return None
        async with self._connect(write=True) as conn:
            # Compare-and-set on the status just read: a concurrent change
            # makes this update match no row.
            changed = await conn.execute(
                update(commands)
                .where(
                    commands.c.command_id == command_id,
                    commands.c.status == from_status,
                )
                .values(**values)
            )
            if changed.rowcount != 1:
                return None
            await record_transition(
                conn, COMMAND, command_id, from_status, to_status, at, message
            )
            row = await conn.execute(
                select(commands).where(commands.c.command_id == command_id)
            )
            return _command(row.one())

    async def _status(self, command_id: str) -> CommandStatus | None:
        # Read outside the write transaction. In WAL mode SQLite returns
        # SQLITE_BUSY_SNAPSHOT at once, without the busy timeout, when a read
        # transaction tries to write after another connection committed.
        query = select(commands.c.status).where(commands.c.command_id == command_id)
        async with self._connect() as conn:
            status = (await conn.execute(query)).scalar()
        return None if status is None else CommandStatus(status)

    async def due_for_expiry(self, now: datetime) -> list[Command]:
        query = select(commands).where(
            commands.c.status == CommandStatus.QUEUED, commands.c.expires_at <= now
        )
        return await self._many(query.order_by(commands.c.seq))

    async def unacknowledged(self, sent_before: datetime) -> list[Command]:
        query = select(commands).where(
            commands.c.status == CommandStatus.SENT,
            commands.c.sent_at <= sent_before,
        )
        return await self._many(query.order_by(commands.c.seq))

    async def transitions(self, subject: str, subject_id: str) -> list[Transition]:
        query = (
            select(transitions)
            .where(
                transitions.c.subject == subject,
                transitions.c.subject_id == subject_id,
            )
            .order_by(transitions.c.id)
        )
        async with self._connect() as conn:
            result = await conn.execute(query)
            return [_transition(row) for row in result]

    async def _one(self, query: Any) -> Command | None:
        async with self._connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _command(row)

    async def _many(self, query: Any) -> list[Command]:
        async with self._connect() as conn:
            result = await conn.execute(query)
            return [_command(row) for row in result]


def _command_values(command: Command) -> dict[str, Any]:
    return {
        "command_id": command.command_id,
        "robot_id": command.robot_id,
        "type": command.type,
        "params": command.params,
        "priority": command.priority,
        "status": command.status,
        "idempotency_key": command.idempotency_key,
        "mission_id": command.mission_id,
        "attempts": command.attempts,
        "created_at": command.created_at,
        "updated_at": command.updated_at,
        "expires_at": command.expires_at,
        "sent_at": command.sent_at,
        "message": command.message,
    }


def _command(row: Row[Any]) -> Command:
    values = dict(row._mapping)
    for name in ("created_at", "updated_at", "expires_at", "sent_at"):
        values[name] = _utc(values[name])
    values["status"] = CommandStatus(values["status"])
    return Command(**values)


def _transition(row: Row[Any]) -> Transition:
    values = row._mapping
    return Transition(
        from_status=values["from_status"],
        to_status=values["to_status"],
        at=_utc(values["at"]),
        message=values["message"],
    )


def _replace(command: Command, **changes: Any) -> Command:
    return msgspec.structs.replace(command, **changes)
