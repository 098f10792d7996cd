"""The design most tutorials show, as a baseline for fleethub's benchmarks.

A FastAPI WebSocket endpoint that, for every state message, validates it
with pydantic, opens one SQLAlchemy ORM session, adds one row and commits,
sets the robot's latest state in a cache (a dict, or Redis with
``--redis-url``) and then acknowledges. Analytics load the robot's rows into
a pandas DataFrame and iterate it row by row.

It speaks the robot link's frames (``welcome``, ``state_update`` -> ``ack``)
on ``/ws/robots/{robot_id}``, so the benchmark load runs against it
unchanged. It uses the same ``telemetry`` table layout as fleethub, so the
analytics benchmark can point it at a database fleethub's schema created.
Run: ``python benchmarks/tutorial_server.py --port 8002
--database-url sqlite+aiosqlite:///tutorial.db``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import uuid
from datetime import datetime
from typing import Any

import pandas as pd
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ValidationError
from sqlalchemy import DateTime, Float, Integer, String, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Telemetry(Base):
    __tablename__ = "telemetry"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    robot_id: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    z: Mapped[float] = mapped_column(Float)
    roll: Mapped[float] = mapped_column(Float)
    pitch: Mapped[float] = mapped_column(Float)
    yaw: Mapped[float] = mapped_column(Float)
    linear: Mapped[float] = mapped_column(Float)
    angular: Mapped[float] = mapped_column(Float)
    battery: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(16))


class Position(BaseModel):
    x: float
    y: float
    z: float = 0.0


class Orientation(BaseModel):
    yaw: float
    roll: float = 0.0
    pitch: float = 0.0


class Velocity(BaseModel):
    linear: float
    angular: float = 0.0


class RobotState(BaseModel):
    timestamp: datetime
    position: Position
    orientation: Orientation
    velocity: Velocity
    status: str
    battery: float | None = None


class StateUpdate(BaseModel):
    type: str
    seq: int
    data: RobotState


def build_app(database_url: str, redis_url: str | None) -> FastAPI:
    engine = create_async_engine(database_url)
    Session = async_sessionmaker(engine, expire_on_commit=False)
    cache: dict[str, str] = {}
    redis_client = None
    prefix = f"tutorial-bench-{uuid.uuid4().hex[:8]}:"
    if redis_url:
        import redis.asyncio as redis

        redis_client = redis.from_url(redis_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield
        if redis_client is not None:
            async for key in redis_client.scan_iter(match=f"{prefix}*"):
                await redis_client.delete(key)
            await redis_client.aclose()
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/ws/robots/{robot_id}")
    async def robot_socket(websocket: WebSocket, robot_id: str) -> None:
        await websocket.accept()
        await websocket.send_json(
            {"type": "welcome", "robot_id": robot_id, "last_timestamp": None}
        )
        try:
            while True:
                message = await websocket.receive_json()
                if message.get("type") != "state_update":
                    continue
                try:
                    update = StateUpdate(**message)
                except ValidationError as exc:
                    await websocket.send_json(
                        {"type": "error", "code": "invalid", "message": str(exc)}
                    )
                    continue
                state = update.data
                async with Session() as session:
                    session.add(
                        Telemetry(
                            robot_id=robot_id,
                            ts=state.timestamp,
                            x=state.position.x,
                            y=state.position.y,
                            z=state.position.z,
                            roll=state.orientation.roll,
                            pitch=state.orientation.pitch,
                            yaw=state.orientation.yaw,
                            linear=state.velocity.linear,
                            angular=state.velocity.angular,
                            battery=state.battery,
                            status=state.status,
                        )
                    )
                    await session.commit()
                if redis_client is not None:
                    await redis_client.set(prefix + robot_id, state.model_dump_json())
                else:
                    cache[robot_id] = state.model_dump_json()
                await websocket.send_json({"type": "ack", "seq": update.seq})
        except WebSocketDisconnect:
            pass

    @app.get("/api/robots/{robot_id}/analytics")
    async def analytics(robot_id: str, max_rows: int | None = None) -> dict[str, Any]:
        query = (
            select(
                Telemetry.ts, Telemetry.x, Telemetry.y, Telemetry.linear,
                Telemetry.battery, Telemetry.status,
            )
            .where(Telemetry.robot_id == robot_id)
            .order_by(Telemetry.ts)
        )  # fmt: skip
        if max_rows is not None:
            query = query.limit(max_rows)
        async with engine.connect() as conn:
            df = await conn.run_sync(lambda sync_conn: pd.read_sql(query, sync_conn))
        return row_by_row_analytics(df)

    return app


def row_by_row_analytics(df: pd.DataFrame, max_gap_s: float = 60.0) -> dict[str, Any]:
    samples = 0
    distance = 0.0
    speed_sum = 0.0
    seconds = 0.0
    cycles = 0
    battery_sum = 0.0
    battery_count = 0
    previous = None
    for _, row in df.iterrows():
        samples += 1
        speed_sum += abs(row["linear"])
        if row["battery"] is not None and not pd.isna(row["battery"]):
            battery_sum += row["battery"]
            battery_count += 1
        if previous is not None:
            distance += math.hypot(row["x"] - previous["x"], row["y"] - previous["y"])
            gap = (
                pd.Timestamp(row["ts"]) - pd.Timestamp(previous["ts"])
            ).total_seconds()
            if gap <= max_gap_s:
                seconds += gap
        if row["status"] == "charging" and (
            previous is None or previous["status"] != "charging"
        ):
            cycles += 1
        previous = row
    return {
        "samples": samples,
        "distance_m": distance,
        "avg_linear_velocity_mps": speed_sum / samples if samples else None,
        "operating_hours": seconds / 3600.0,
        "charging_cycles": cycles,
        "avg_battery": battery_sum / battery_count if battery_count else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True, help="SQLAlchemy async URL.")
    parser.add_argument(
        "--redis-url", default=None, help="Cache in Redis instead of a dict."
    )
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.database_url, args.redis_url),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )
