"""Create robots, telemetry, events and commands.

On PostgreSQL the telemetry table is partitioned by range of ``ts`` with a
default partition, so daily partitions can be attached ahead of time and
retention can drop whole days.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TELEMETRY_COLUMNS_PG = """
    robot_id varchar(64) NOT NULL,
    ts timestamptz NOT NULL,
    x double precision NOT NULL,
    y double precision NOT NULL,
    z double precision NOT NULL,
    roll double precision NOT NULL,
    pitch double precision NOT NULL,
    yaw double precision NOT NULL,
    linear double precision NOT NULL,
    angular double precision NOT NULL,
    battery double precision,
    status varchar(16) NOT NULL,
    min_range double precision,
    lidar_ranges json
"""


def upgrade() -> None:
    op.create_table(
        "robots",
        sa.Column("robot_id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
    )
    _create_telemetry()
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("robot_id", sa.String(64), nullable=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_events_robot_ts", "events", ["robot_id", "ts"])
    op.create_index("ix_events_type_ts", "events", ["type", "ts"])
    op.create_table(
        "commands",
        sa.Column("command_id", sa.String(36), primary_key=True),
        sa.Column("robot_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message", sa.Text, nullable=True),
    )
    op.create_index("ix_commands_robot_created", "commands", ["robot_id", "created_at"])


def _create_telemetry() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE TABLE telemetry ({_TELEMETRY_COLUMNS_PG}) PARTITION BY RANGE (ts)"
        )
        op.execute("CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT")
    else:
        op.create_table(
            "telemetry",
            sa.Column("robot_id", sa.String(64), nullable=False),
            sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
            *(sa.Column(name, sa.Float, nullable=False) for name in _POSE_FIELDS),
            sa.Column("battery", sa.Float, nullable=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("min_range", sa.Float, nullable=True),
            sa.Column("lidar_ranges", sa.JSON, nullable=True),
        )
    op.create_index("ix_telemetry_robot_ts", "telemetry", ["robot_id", "ts"])


_POSE_FIELDS = ("x", "y", "z", "roll", "pitch", "yaw", "linear", "angular")


def downgrade() -> None:
    op.drop_table("commands")
    op.drop_table("events")
    op.drop_table("telemetry")
    op.drop_table("robots")
