"""Rebuild commands for the delivery lifecycle; add missions and transitions.

Revision 0001 created a ``commands`` table that no released code wrote to, so
this revision drops it and creates the lifecycle shape instead of altering it:
SQLite cannot add an autoincrement column to an existing table, and ``seq``
(the creation order used for delivery) needs one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _serial() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer, "sqlite")


def _time(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.drop_index("ix_commands_robot_created", table_name="commands")
    op.drop_table("commands")
    _create_commands()
    _create_missions()
    op.create_table(
        "transitions",
        sa.Column("id", _serial(), primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(36), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        _time("at", nullable=False),
        sa.Column("message", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_transitions_subject", "transitions", ["subject", "subject_id", "id"]
    )


def _create_commands() -> None:
    op.create_table(
        "commands",
        sa.Column("seq", _serial(), primary_key=True, autoincrement=True),
        sa.Column("command_id", sa.String(36), nullable=False, unique=True),
        sa.Column("robot_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("mission_id", sa.String(36), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        _time("created_at", nullable=False),
        _time("updated_at", nullable=False),
        _time("expires_at"),
        _time("sent_at"),
        sa.Column("message", sa.Text, nullable=True),
        # NULL keys never collide (SQLite and PostgreSQL agree), so only
        # commands posted with a key are deduplicated.
        sa.UniqueConstraint(
            "robot_id", "idempotency_key", name="uq_commands_robot_idempotency_key"
        ),
    )
    op.create_index(
        "ix_commands_robot_status",
        "commands",
        ["robot_id", "status", "priority", "seq"],
    )
    op.create_index("ix_commands_status", "commands", ["status"])


def _create_missions() -> None:
    op.create_table(
        "missions",
        sa.Column("seq", _serial(), primary_key=True, autoincrement=True),
        sa.Column("mission_id", sa.String(36), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_robot_id", sa.String(64), nullable=True),
        sa.Column("robot_id", sa.String(64), nullable=True),
        sa.Column("waypoints", sa.JSON, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("timeout_s", sa.Float, nullable=False),
        _time("deadline"),
        _time("created_at", nullable=False),
        _time("updated_at", nullable=False),
        _time("assigned_at"),
        _time("started_at"),
        _time("finished_at"),
        sa.Column("current_waypoint", sa.Integer, nullable=False),
        sa.Column("distance_m", sa.Float, nullable=False),
        sa.Column("failure_reason", sa.String(64), nullable=True),
        sa.Column("message", sa.Text, nullable=True),
    )
    op.create_index("ix_missions_status", "missions", ["status", "priority", "seq"])
    op.create_index("ix_missions_robot", "missions", ["robot_id", "status"])


def downgrade() -> None:
    op.drop_table("transitions")
    op.drop_table("missions")
    op.drop_table("commands")
    op.create_table(
        "commands",
        sa.Column("command_id", sa.String(36), primary_key=True),
        sa.Column("robot_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _time("created_at", nullable=False),
        _time("updated_at", nullable=False),
        sa.Column("message", sa.Text, nullable=True),
    )
    op.create_index("ix_commands_robot_created", "commands", ["robot_id", "created_at"])
