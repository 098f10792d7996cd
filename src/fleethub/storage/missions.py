"""Missions on SQLAlchemy: SQLite and PostgreSQL.

Status changes follow the same compare-and-set pattern as
:mod:`fleethub.storage.commands` and share its transitions table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Row, func, insert, select, update

from fleethub.missions.store import (
    RUNNING_MISSION_STATUSES,
    Mission,
    MissionStatus,
    Waypoint,
)
from fleethub.storage.commands import record_transition
from fleethub.storage.schema import missions
from fleethub.storage.sql import SqlStorage, _utc

MISSION = "mission"
_TIME_COLUMNS = (
    "created_at",
    "updated_at",
    "deadline",
    "assigned_at",
    "started_at",
    "finished_at",
)


class SqlMissionStore:
    """:class:`fleethub.missions.store.MissionStore` on the storage's engine."""

    def __init__(self, storage: SqlStorage) -> None:
        self._connect = storage._connect

    async def insert_mission(self, mission: Mission) -> Mission:
        values = msgspec.to_builtins(mission, builtin_types=(datetime,))
        del values["seq"]
        async with self._connect(write=True) as conn:
            result = await conn.execute(insert(missions).values(**values))
            await record_transition(
                conn,
                MISSION,
                mission.mission_id,
                None,
                mission.status,
                mission.created_at,
                None,
            )
        seq = int(result.inserted_primary_key[0])
        return msgspec.structs.replace(mission, seq=seq)

    async def get_mission(self, mission_id: str) -> Mission | None:
        query = select(missions).where(missions.c.mission_id == mission_id)
        async with self._connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _mission(row)

    async def list_missions(
        self,
        *,
        statuses: Sequence[MissionStatus] = (),
        robot_id: str | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[Mission]:
        query = select(missions)
        if statuses:
            query = query.where(missions.c.status.in_([str(s) for s in statuses]))
        if robot_id is not None:
            query = query.where(missions.c.robot_id == robot_id)
        if before_seq is not None:
            query = query.where(missions.c.seq < before_seq)
        return await self._many(query.order_by(missions.c.seq.desc()).limit(limit))

    async def pending_missions(self) -> list[Mission]:
        query = (
            select(missions)
            .where(missions.c.status == MissionStatus.PENDING)
            .order_by(missions.c.priority.desc(), missions.c.seq)
        )
        return await self._many(query)

    async def running_missions(self) -> list[Mission]:
        statuses = [str(s) for s in RUNNING_MISSION_STATUSES]
        query = select(missions).where(missions.c.status.in_(statuses))
        return await self._many(query.order_by(missions.c.seq))

    async def mission_counts(self) -> dict[str, int]:
        query = select(missions.c.status, func.count()).group_by(missions.c.status)
        async with self._connect() as conn:
            result = await conn.execute(query)
            return {status: int(count) for status, count in result}

    async def update_mission(
        self,
        mission_id: str,
        from_statuses: Sequence[MissionStatus],
        at: datetime,
        *,
        to_status: MissionStatus | None = None,
        message: str | None = None,
        **values: Any,
    ) -> Mission | None:
        from_status = await self._status(mission_id)
        if from_status is None or from_status not in from_statuses:
            return None
        values["updated_at"] = at
        if to_status is not None:
            values["status"] = to_status
        if message is not None:
            values["message"] = message
        async with self._connect(write=True) as conn:
            changed = await conn.execute(
                update(missions)
                .where(
                    missions.c.mission_id == mission_id,
                    missions.c.status == from_status,
                )
                .values(**values)
            )
            if changed.rowcount != 1:
                return None
            if to_status is not None and to_status != from_status:
                await record_transition(
                    conn, MISSION, mission_id, from_status, to_status, at, message
                )
            row = await conn.execute(
                select(missions).where(missions.c.mission_id == mission_id)
            )
            return _mission(row.one())

    async def _status(self, mission_id: str) -> MissionStatus | None:
        # Read outside the write transaction, as in SqlCommandStore._status.
        query = select(missions.c.status).where(missions.c.mission_id == mission_id)
        async with self._connect() as conn:
            status = (await conn.execute(query)).scalar()
        return None if status is None else MissionStatus(status)

    async def _many(self, query: Any) -> list[Mission]:
        async with self._connect() as conn:
            result = await conn.execute(query)
            return [_mission(row) for row in result]


def _mission(row: Row[Any]) -> Mission:
    values = dict(row._mapping)
    for name in _TIME_COLUMNS:
        values[name] = _utc(values[name])
    values["status"] = MissionStatus(values["status"])
    values["waypoints"] = msgspec.convert(values["waypoints"], list[Waypoint])
    return Mission(**values)
