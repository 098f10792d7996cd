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
    UniqueConstraint,
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
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("robot_id", String(64), nullable=True),
    Column("severity", String(16), nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("data", JSON, nullable=False),
    Index("ix_events_robot_ts", "robot_id", "ts"),
    Index("ix_events_type_ts", "type", "ts"),
)

# SQLite only autoincrements an INTEGER primary key.
SERIAL = BigInteger().with_variant(Integer, "sqlite")

# Commands, missions and their status history (revision 0002). ``seq`` is the
# creation order: queued commands are delivered by priority, then by ``seq``.
commands = Table(
    "commands",
    metadata,
    Column("seq", SERIAL, primary_key=True, autoincrement=True),
    Column("command_id", String(36), nullable=False, unique=True),
    Column("robot_id", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("idempotency_key", String(128), nullable=True),
    Column("mission_id", String(36), nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("message", Text, nullable=True),
    UniqueConstraint(
        "robot_id", "idempotency_key", name="uq_commands_robot_idempotency_key"
    ),
    Index("ix_commands_robot_status", "robot_id", "status", "priority", "seq"),
    Index("ix_commands_status", "status"),
)

missions = Table(
    "missions",
    metadata,
    Column("seq", SERIAL, primary_key=True, autoincrement=True),
    Column("mission_id", String(36), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("requested_robot_id", String(64), nullable=True),
    Column("robot_id", String(64), nullable=True),
    Column("waypoints", JSON, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("timeout_s", Float, nullable=False),
    Column("deadline", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("assigned_at", DateTime(timezone=True), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("current_waypoint", Integer, nullable=False),
    Column("distance_m", Float, nullable=False),
    Column("failure_reason", String(64), nullable=True),
    Column("message", Text, nullable=True),
    Index("ix_missions_status", "status", "priority", "seq"),
    Index("ix_missions_robot", "robot_id", "status"),
)

# Every status change of a command or mission, oldest first by ``id``.
transitions = Table(
    "transitions",
    metadata,
    Column("id", SERIAL, primary_key=True, autoincrement=True),
    Column("subject", String(16), nullable=False),
    Column("subject_id", String(36), nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("message", Text, nullable=True),
    Index("ix_transitions_subject", "subject", "subject_id", "id"),
)

# Per-robot, per-UTC-hour aggregates of telemetry (revision 0005), kept per
# analytics gap setting because operating time depends on it. Only hours with
# samples have a row; ``telemetry_rollup_spans`` records which hours have been
# rolled up at all. See ``fleethub.storage.rollups``.
telemetry_rollups = Table(
    "telemetry_rollups",
    metadata,
    Column("robot_id", String(64), primary_key=True),
    Column("max_gap_s", Float, primary_key=True),
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("samples", BigInteger, nullable=False),
    Column("distance_m", Float, nullable=False),
    Column("abs_linear_sum", Float, nullable=False),
    Column("operating_us", BigInteger, nullable=False),
    Column("charging_starts", BigInteger, nullable=False),
    Column("battery_sum", Float, nullable=False),
    Column("battery_samples", BigInteger, nullable=False),
    Column("first_ts", DateTime(timezone=True), nullable=False),
    Column("first_x", Float, nullable=False),
    Column("first_y", Float, nullable=False),
    Column("first_status", String(16), nullable=False),
    Column("last_ts", DateTime(timezone=True), nullable=False),
    Column("last_x", Float, nullable=False),
    Column("last_y", Float, nullable=False),
    Column("last_status", String(16), nullable=False),
    Index("ix_telemetry_rollups_hour", "hour"),
)

telemetry_rollup_spans = Table(
    "telemetry_rollup_spans",
    metadata,
    Column("robot_id", String(64), primary_key=True),
    Column("max_gap_s", Float, primary_key=True),
    Column("span_start", DateTime(timezone=True), primary_key=True),
    Column("span_end", DateTime(timezone=True), nullable=False),
)
