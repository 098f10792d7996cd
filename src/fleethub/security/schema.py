"""Tables for API keys, robot credentials and the audit log.

They share the storage package's ``MetaData`` so that Alembic sees one schema.
Tokens are never stored, only their SHA-256 digests.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
)

from fleethub.storage.schema import metadata

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(160), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# One credential per robot: issuing a new one replaces the old one.
robot_credentials = Table(
    "robot_credentials",
    metadata,
    Column("robot_id", String(64), primary_key=True),
    Column("credential_id", String(16), nullable=False, unique=True),
    Column("digest", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(160), nullable=False),
)

# Append-only: the migration installs triggers that reject UPDATE and DELETE.
audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("actor_kind", String(16), nullable=False),
    Column("actor_id", String(160), nullable=False),
    Column("actor_role", String(16), nullable=True),
    Column("method", String(16), nullable=False),
    Column("path", String(512), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("client", String(64), nullable=True),
    Column("request_id", String(32), nullable=False),
    Column("details", JSON, nullable=False),
    Index("ix_audit_log_ts", "ts"),
    Index("ix_audit_log_actor", "actor_kind", "actor_id"),
)
