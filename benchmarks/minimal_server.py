"""The machine's limit: the least a server must do to take robot states durably.

It has a bare ``websockets`` receive loop on uvloop, msgspec decoding into
plain structs (types checked, no range checks) and the latest state per
robot in a dict. One writer task stores rows in batches (COPY on
PostgreSQL, ``executemany`` in a thread on SQLite) and acknowledges each
connection's highest ``seq`` after the commit. No time policy, rules, bus or events: it
is what fleethub's ingest is measured against.

It speaks the robot link's frames (``welcome``, ``state_update`` -> ``ack``)
on ``/ws/robots/{robot_id}``, so the benchmark load runs against it
unchanged. Run: ``python benchmarks/minimal_server.py --port 8001
--database-url sqlite+aiosqlite:///minimal.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
from datetime import UTC, datetime

import asyncpg
import msgspec
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

BATCH_SIZE = 2000
FLUSH_INTERVAL_S = 0.02

COLUMNS = (
    "robot_id", "ts", "x", "y", "z", "roll", "pitch", "yaw",
    "linear", "angular", "battery", "status",
)  # fmt: skip

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS telemetry (
    robot_id VARCHAR(64) NOT NULL, ts {ts_type} NOT NULL,
    x FLOAT NOT NULL, y FLOAT NOT NULL, z FLOAT NOT NULL,
    roll FLOAT NOT NULL, pitch FLOAT NOT NULL, yaw FLOAT NOT NULL,
    linear FLOAT NOT NULL, angular FLOAT NOT NULL,
    battery FLOAT, status VARCHAR(16) NOT NULL
)
"""
# The same index fleethub keeps, so both servers pay for the same schema.
CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_telemetry_robot_ts ON telemetry (robot_id, ts)"
)


class Position(msgspec.Struct):
    x: float
    y: float
    z: float = 0.0


class Orientation(msgspec.Struct):
    yaw: float
    roll: float = 0.0
    pitch: float = 0.0


class Velocity(msgspec.Struct):
    linear: float
    angular: float = 0.0


class State(msgspec.Struct):
    timestamp: datetime
    position: Position
    orientation: Orientation
    velocity: Velocity
    status: str
    battery: float | None = None


class StateUpdate(msgspec.Struct, tag="state_update", tag_field="type"):
    seq: int
    data: State


class CommandResponse(msgspec.Struct, tag="command_response", tag_field="type"):
    data: dict


decoder = msgspec.json.Decoder(StateUpdate | CommandResponse)
latest: dict[str, State] = {}


class Writer:
    """Batches rows, writes them and acknowledges after each commit."""

    def __init__(self, store: SqliteStore | PostgresStore) -> None:
        self.store = store
        self.rows: list[tuple] = []
        self.acks: dict[ServerConnection, int] = {}
        self.wake = asyncio.Event()

    def add(
        self, connection: ServerConnection, robot_id: str, update: StateUpdate
    ) -> None:
        state = update.data
        p, o, v = state.position, state.orientation, state.velocity
        self.rows.append(
            (robot_id, state.timestamp.astimezone(UTC), p.x, p.y, p.z, o.roll,
             o.pitch, o.yaw, v.linear, v.angular, state.battery, state.status)
        )  # fmt: skip
        self.acks[connection] = update.seq
        if len(self.rows) >= BATCH_SIZE:
            self.wake.set()

    async def run(self) -> None:
        while True:
            if not self.rows:
                await asyncio.sleep(FLUSH_INTERVAL_S)
            elif len(self.rows) < BATCH_SIZE:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), FLUSH_INTERVAL_S)
                except TimeoutError:
                    pass
            await self.flush()

    async def flush(self) -> None:
        if not self.rows:
            return
        rows, acks = self.rows, self.acks
        self.rows, self.acks = [], {}
        await self.store.write(rows)
        for connection, seq in acks.items():
            try:
                await connection.send(b'{"type":"ack","seq":%d}' % seq, text=True)
            except ConnectionClosed:
                pass


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, check_same_thread=False)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute(CREATE_TABLE.format(ts_type="DATETIME"))
        self.connection.execute(CREATE_INDEX)
        self.insert = (
            f"INSERT INTO telemetry ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(COLUMNS))})"
        )

    async def write(self, rows: list[tuple]) -> None:
        await asyncio.to_thread(self._write, rows)

    def _write(self, rows: list[tuple]) -> None:
        text_rows = [
            (r[0], r[1].strftime("%Y-%m-%d %H:%M:%S.%f"), *r[2:]) for r in rows
        ]
        with self.connection:
            self.connection.executemany(self.insert, text_rows)

    async def close(self) -> None:
        self.connection.close()


class PostgresStore:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    @classmethod
    async def open(cls, dsn: str) -> PostgresStore:
        connection = await asyncpg.connect(dsn)
        await connection.execute(CREATE_TABLE.format(ts_type="TIMESTAMPTZ"))
        await connection.execute(CREATE_INDEX)
        return cls(connection)

    async def write(self, rows: list[tuple]) -> None:
        await self.connection.copy_records_to_table(
            "telemetry", records=rows, columns=COLUMNS
        )

    async def close(self) -> None:
        await self.connection.close()


async def handle(connection: ServerConnection, writer: Writer) -> None:
    path = connection.request.path
    robot_id = path.rsplit("/", 1)[-1]
    await connection.send(
        msgspec.json.encode(
            {"type": "welcome", "robot_id": robot_id, "last_timestamp": None}
        ),
        text=True,
    )
    try:
        async for raw in connection:
            try:
                frame = decoder.decode(raw)
            except msgspec.MsgspecError as exc:
                await connection.send(
                    msgspec.json.encode(
                        {"type": "error", "code": "invalid", "message": str(exc)}
                    )
                )
                continue
            if isinstance(frame, StateUpdate):
                latest[robot_id] = frame.data
                writer.add(connection, robot_id, frame)
    except ConnectionClosed:
        pass


async def open_store(url: str) -> SqliteStore | PostgresStore:
    if url.startswith("sqlite"):
        return SqliteStore(url.split(":///", 1)[1])
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    return await PostgresStore.open(dsn)


async def main(port: int, url: str) -> None:
    store = await open_store(url)
    writer = Writer(store)
    flusher = asyncio.create_task(writer.run())
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        lambda c: handle(c, writer), "127.0.0.1", port,
        compression=None, ping_interval=None, max_size=2**20,
    ):  # fmt: skip
        await stop
    flusher.cancel()
    await writer.flush()
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True, help="SQLAlchemy-style URL.")
    args = parser.parse_args()
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run
    run(main(args.port, args.database_url))
