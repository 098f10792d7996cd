"""Table definitions shared by the storage code and the migrations."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

robots = Table(
    "robots",
    metadata,
    Column("robot_id", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=True),
)

# One row per accepted state. Timestamps strictly increase per robot (the
# ingest pipeline rejects anything else), so (robot_id, ts) orders a robot's
# history and doubles as the pagination cursor.
telemetry = Table(
    "telemetry",
    metadata,
    Column("robot_id", String(64), nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("x", Float, nullable=False),
    Column("y", Float, nullable=False),
    Column("z", Float, nullable=False),
    Column("roll", Float, nullable=False),
    Column("pitch", Float, nullable=False),
    Column("yaw", Float, nullable=False),
    Column("linear", Float, nullable=False),
    Column("angular", Float, nullable=False),
    Column("battery", Float, nullable=True),
    Column("status", String(16), nullable=False),
    Column("min_range", Float, nullable=True),
    Column("lidar_ranges", JSON, nullable=True),
    Index("ix_telemetry_robot_ts", "robot_id", "ts"),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("robot_id", String(64), nullable=True),
    Column("severity", String(16), nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("data", JSON, nullable=False),
    Index("ix_events_robot_ts", "robot_id", "ts"),
    Index("ix_events_type_ts", "type", "ts"),
)

commands = Table(
    "commands",
    metadata,
    Column("command_id", String(36), primary_key=True),
    Column("robot_id", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("message", Text, nullable=True),
    Index("ix_commands_robot_created", "robot_id", "created_at"),
)
