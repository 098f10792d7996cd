"""Tables for rules, alerts and webhooks, on the shared ``metadata``."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from fleethub.storage.schema import metadata

_BIG_ID = BigInteger().with_variant(Integer, "sqlite")

# Rules edited through the API. A row overrides the rule of the same id in the
# rules file; a row with ``deleted`` set hides it.
rules = Table(
    "rules",
    metadata,
    Column("rule_id", String(64), primary_key=True),
    Column("definition", JSON, nullable=True),
    Column("deleted", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", String(36), primary_key=True),
    Column("rule_id", String(64), nullable=False),
    Column("robot_id", String(64), nullable=True),
    Column("event_type", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("data", JSON, nullable=False),
    Column("acknowledged_at", DateTime(timezone=True), nullable=True),
    Column("acknowledged_by", String(128), nullable=True),
    Column("cleared_at", DateTime(timezone=True), nullable=True),
    Index("ix_alerts_status_opened", "status", "opened_at"),
    Index("ix_alerts_robot_opened", "robot_id", "opened_at"),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("webhook_id", String(36), primary_key=True),
    Column("url", Text, nullable=False),
    Column("event_types", JSON, nullable=False),
    Column("severities", JSON, nullable=False),
    Column("secret", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# One row per (webhook, event) still to deliver. Rows are deleted once delivered
# or expired, so the table contains only the backlog.
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", _BIG_ID, primary_key=True, autoincrement=True),
    Column("webhook_id", String(36), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False),
    Index("ix_webhook_outbox_webhook_id", "webhook_id", "id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", _BIG_ID, primary_key=True, autoincrement=True),
    Column("webhook_id", String(36), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_s", Float, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Index("ix_webhook_deliveries_webhook_id", "webhook_id", "id"),
)
