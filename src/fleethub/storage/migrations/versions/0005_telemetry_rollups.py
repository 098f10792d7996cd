"""Create the per-robot, per-hour telemetry rollups behind analytics.

``telemetry_rollups`` holds one row per robot, gap setting and UTC hour that
has samples; ``telemetry_rollup_spans`` records which hours have been rolled
up, empty ones included. Both start empty: the analytics query fills them on
first use, so upgrading a large database takes no time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_rollups",
        sa.Column("robot_id", sa.String(64), primary_key=True),
        sa.Column("max_gap_s", sa.Float, primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("samples", sa.BigInteger, nullable=False),
        sa.Column("distance_m", sa.Float, nullable=False),
        sa.Column("abs_linear_sum", sa.Float, nullable=False),
        sa.Column("operating_us", sa.BigInteger, nullable=False),
        sa.Column("charging_starts", sa.BigInteger, nullable=False),
        sa.Column("battery_sum", sa.Float, nullable=False),
        sa.Column("battery_samples", sa.BigInteger, nullable=False),
        sa.Column("first_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_x", sa.Float, nullable=False),
        sa.Column("first_y", sa.Float, nullable=False),
        sa.Column("first_status", sa.String(16), nullable=False),
        sa.Column("last_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_x", sa.Float, nullable=False),
        sa.Column("last_y", sa.Float, nullable=False),
        sa.Column("last_status", sa.String(16), nullable=False),
    )
    op.create_index("ix_telemetry_rollups_hour", "telemetry_rollups", ["hour"])
    op.create_table(
        "telemetry_rollup_spans",
        sa.Column("robot_id", sa.String(64), primary_key=True),
        sa.Column("max_gap_s", sa.Float, primary_key=True),
        sa.Column("span_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("span_end", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("telemetry_rollup_spans")
    op.drop_index("ix_telemetry_rollups_hour", table_name="telemetry_rollups")
    op.drop_table("telemetry_rollups")
