"""The command and mission stores, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from alembic import command as alembic_command

from fleethub.commands.store import Command, CommandStatus, DuplicateIdempotencyKey
from fleethub.missions.store import Mission, MissionStatus, Waypoint
from fleethub.models import utcnow
from fleethub.storage import migrate
from fleethub.storage.commands import SqlCommandStore
from fleethub.storage.missions import SqlMissionStore
from fleethub.storage.sql import SqlStorage, create_engine

pytestmark = pytest.mark.parametrize(
    "database_url", ["sqlite", "postgresql"], indirect=True
)

Q, S, A = CommandStatus.QUEUED, CommandStatus.SENT, CommandStatus.ACKNOWLEDGED


@pytest_asyncio.fixture
async def storage(database_url: str) -> AsyncIterator[SqlStorage]:
    engine = create_engine(database_url)
    await migrate.upgrade(engine)
    storage = SqlStorage(engine)
    await storage.ensure_robot("r1", utcnow())
    yield storage
    await storage.close()


def new_command(name: str, priority: int = 0, **fields: object) -> Command:
    now = utcnow()
    values = {
        "command_id": name,
        "robot_id": "r1",
        "type": "note",
        "params": {"name": name},
        "priority": priority,
        "status": Q,
        "created_at": now,
        "updated_at": now,
        **fields,
    }
    return Command(**values)  # type: ignore[arg-type]


async def test_deliverable_orders_by_priority_then_creation(
    storage: SqlStorage,
) -> None:
    """Queued commands come back highest priority first, then oldest first."""
    store = SqlCommandStore(storage)
    for name, priority in [("a", 1), ("b", 3), ("c", 1), ("d", 3)]:
        await store.insert_command(new_command(name, priority))
    now = utcnow()
    await store.insert_command(
        new_command("old", 9, expires_at=now - timedelta(seconds=1))
    )

    order = [c.command_id for c in await store.deliverable("r1", now)]
    expired = [c.command_id for c in await store.due_for_expiry(now)]

    assert order == ["b", "d", "a", "c"]
    assert expired == ["old"]


async def test_idempotency_key_is_unique_per_robot(storage: SqlStorage) -> None:
    """A second command with the robot's key raises; keyless commands never clash."""
    store = SqlCommandStore(storage)
    await storage.ensure_robot("r2", utcnow())
    await store.insert_command(new_command("a", idempotency_key="k"))
    await store.insert_command(new_command("b"))
    await store.insert_command(new_command("c"))
    await store.insert_command(new_command("d", robot_id="r2", idempotency_key="k"))

    with pytest.raises(DuplicateIdempotencyKey):
        await store.insert_command(new_command("e", idempotency_key="k"))

    found = await store.find_by_idempotency_key("r1", "k")
    assert found is not None
    assert found.command_id == "a"


async def test_transition_is_compare_and_set(storage: SqlStorage) -> None:
    """A transition applies only from the named states and is recorded once."""
    store = SqlCommandStore(storage)
    await store.insert_command(new_command("a"))
    at = utcnow()

    sent = await store.transition("a", (Q,), S, at, sent=True)
    stale = await store.transition("a", (Q,), S, at, sent=True)
    acked = await store.transition("a", (S,), A, at, "ok")
    history = await store.transitions("command", "a")
    unacked = await store.unacknowledged(at + timedelta(seconds=1))

    assert sent is not None
    assert sent.attempts == 1
    assert sent.sent_at == at
    assert stale is None
    assert acked is not None
    assert acked.message == "ok"
    assert [(t.from_status, t.to_status) for t in history] == [
        (None, "queued"),
        ("queued", "sent"),
        ("sent", "acknowledged"),
    ]
    assert unacked == []


async def test_mission_round_trip_and_counts(storage: SqlStorage) -> None:
    """A mission is stored, updated under compare-and-set and counted by status."""
    store = SqlMissionStore(storage)
    now = utcnow()
    mission = Mission(
        mission_id="m1",
        status=MissionStatus.PENDING,
        waypoints=[Waypoint(x=1, y=2, tolerance=0.5, yaw=0.1)],
        priority=0,
        timeout_s=60,
        created_at=now,
        updated_at=now,
    )
    await store.insert_mission(mission)

    assigned = await store.update_mission(
        "m1",
        (MissionStatus.PENDING,),
        now,
        to_status=MissionStatus.ASSIGNED,
        robot_id="r1",
        assigned_at=now,
    )
    stale = await store.update_mission(
        "m1", (MissionStatus.PENDING,), now, to_status=MissionStatus.CANCELLED
    )
    running = await store.running_missions()
    counts = await store.mission_counts()

    assert assigned is not None
    assert assigned.robot_id == "r1"
    assert assigned.waypoints == mission.waypoints
    assert stale is None
    assert [m.mission_id for m in running] == ["m1"]
    assert counts == {"assigned": 1}


async def test_migration_downgrades_and_upgrades(database_url: str) -> None:
    """Revision 0002 can be rolled back to 0001 and applied again."""
    engine = create_engine(database_url)
    await migrate.upgrade(engine)
    async with engine.begin() as conn:
        await conn.run_sync(
            lambda sync: alembic_command.downgrade(migrate._config(sync), "0001")
        )
    downgraded = await migrate.current_revision(engine)
    await migrate.upgrade(engine)
    upgraded = await migrate.current_revision(engine)
    await engine.dispose()

    assert downgraded == "0001"
    assert upgraded == migrate.head_revision()
