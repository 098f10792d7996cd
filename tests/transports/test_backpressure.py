"""Back-pressure on the robot link while the database is locked by another writer."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleethub.settings import Settings
from support import base_time, count_telemetry, make_settings, make_state

WRITER_MAX_BUFFER = 100
STATES = 2 * WRITER_MAX_BUFFER


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path, writer_max_buffer=WRITER_MAX_BUFFER, writer_batch_size=10
    )


async def test_full_buffer_sends_slow_down_and_loses_nothing(
    settings: Settings, open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A full write buffer sends slow_down, pauses reading, then stores every state."""
    database = settings.database_url.removeprefix("sqlite+aiosqlite:///")
    start = base_time()
    async with open_robot("r1") as robot:
        # Another process holding the write lock stalls fleethub's writer.
        lock = sqlite3.connect(database, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            for seq in range(1, STATES + 1):
                await robot.send_state(seq, make_state(start + timedelta(seconds=seq)))
            slow_down = await robot.wait_error("slow_down")
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        await robot.wait_ack(STATES, timeout_s=30)

    errors = [frame for frame in robot.received if frame["type"] == "error"]
    assert slow_down["retryable"] is True
    assert "seq" not in slow_down
    # One slow_down per pause; nothing was rejected.
    assert {frame["code"] for frame in errors} == {"slow_down"}
    assert await count_telemetry(http, "r1") == STATES
