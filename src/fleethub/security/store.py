"""API keys and robot credentials in the database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleethub.errors import Conflict, InvalidInput, NotFound, StorageUnavailable
from fleethub.ids import validate_robot_id
from fleethub.models import utcnow
from fleethub.security.principals import Principal, Role
from fleethub.security.schema import api_keys, robot_credentials
from fleethub.security.tokens import API_KEY, ROBOT_CREDENTIAL, issue_token

MAX_KEY_NAME_LENGTH = 128


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as listed: everything but the secret."""

    key_id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


@dataclass(frozen=True)
class RobotCredentialInfo:
    """A robot credential as listed: everything but the secret."""

    robot_id: str
    credential_id: str
    created_at: datetime
    created_by: str


@contextlib.asynccontextmanager
async def connect(
    engine: AsyncEngine, *, write: bool = False
) -> AsyncIterator[AsyncConnection]:
    """Open a connection (a transaction when writing), translating outages."""
    try:
        if write:
            async with engine.begin() as conn:
                yield conn
        else:
            async with engine.connect() as conn:
                yield conn
    except (OperationalError, PoolTimeout, OSError) as exc:
        raise StorageUnavailable(f"Database unavailable: {exc}") from exc


def actor_label(principal: Principal) -> str:
    """Return ``kind:subject``, the form stored in ``created_by`` and the audit log."""
    return f"{principal.kind}:{principal.subject}"[:160]


class CredentialStore:
    """Create, list, look up and revoke API keys and robot credentials."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create_api_key(
        self, name: str, role: Role, created_by: Principal
    ) -> tuple[ApiKeyInfo, str]:
        """Store a new key and return it with its token, which is not stored."""
        if not name or len(name) > MAX_KEY_NAME_LENGTH or not name.isprintable():
            raise InvalidInput(
                f"Key name must be 1 to {MAX_KEY_NAME_LENGTH} printable characters.",
                code="invalid_key_name",
            )
        issued = issue_token(API_KEY)
        info = ApiKeyInfo(
            issued.token_id, name, role, utcnow(), actor_label(created_by), None
        )
        async with connect(self.engine, write=True) as conn:
            await conn.execute(
                insert(api_keys).values(
                    key_id=info.key_id,
                    name=name,
                    role=role.value,
                    digest=issued.digest,
                    created_at=info.created_at,
                    created_by=info.created_by,
                )
            )
        return info, issued.token

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        """Return every key, revoked ones included, oldest first."""
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        async with connect(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [_api_key_info(row) for row in rows]

    async def find_api_key(self, key_id: str) -> tuple[ApiKeyInfo, str] | None:
        """Return a key that is not revoked, with its stored digest, or None."""
        query = select(api_keys).where(
            api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None)
        )
        async with connect(self.engine) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (_api_key_info(row), row.digest)

    async def revoke_api_key(self, key_id: str) -> ApiKeyInfo:
        """Revoke a key from now on; raise NotFound for an unknown or revoked key."""
        statement = (
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        async with connect(self.engine, write=True) as conn:
            result = await conn.execute(statement)
            row = (
                await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))
            ).first()
        if result.rowcount == 0 or row is None:
            raise NotFound(
                f"API key {key_id!r} does not exist or is revoked.", key_id=key_id
            )
        return _api_key_info(row)

    async def issue_robot_credential(
        self, robot_id: str, created_by: Principal, *, replace: bool = False
    ) -> tuple[RobotCredentialInfo, str]:
        """Store a credential for ``robot_id`` and return it with its token.

        Raises Conflict when the robot already has one, unless ``replace``
        is true, in which case the old credential stops working at once.
        """
        validate_robot_id(robot_id)
        issued = issue_token(ROBOT_CREDENTIAL)
        info = RobotCredentialInfo(
            robot_id, issued.token_id, utcnow(), actor_label(created_by)
        )
        values = {
            "credential_id": info.credential_id,
            "digest": issued.digest,
            "created_at": info.created_at,
            "created_by": info.created_by,
        }
        try:
            async with connect(self.engine, write=True) as conn:
                if replace:
                    await conn.execute(
                        delete(robot_credentials).where(
                            robot_credentials.c.robot_id == robot_id
                        )
                    )
                await conn.execute(
                    insert(robot_credentials).values(robot_id=robot_id, **values)
                )
        except IntegrityError:
            raise Conflict(
                f"Robot {robot_id!r} already has a credential; replace it to issue "
                "a new one.",
                code="credential_exists",
                robot_id=robot_id,
            ) from None
        return info, issued.token

    async def list_robot_credentials(self) -> list[RobotCredentialInfo]:
        """Return every robot credential, ordered by robot id."""
        query = select(robot_credentials).order_by(robot_credentials.c.robot_id)
        async with connect(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [_robot_credential_info(row) for row in rows]

    async def find_robot_credential(
        self, credential_id: str
    ) -> tuple[RobotCredentialInfo, str] | None:
        """Return the credential with this public id and its digest, or None."""
        query = select(robot_credentials).where(
            robot_credentials.c.credential_id == credential_id
        )
        async with connect(self.engine) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (_robot_credential_info(row), row.digest)

    async def revoke_robot_credential(self, robot_id: str) -> None:
        """Delete the robot's credential; raise NotFound when it has none."""
        validate_robot_id(robot_id)
        statement = delete(robot_credentials).where(
            robot_credentials.c.robot_id == robot_id
        )
        async with connect(self.engine, write=True) as conn:
            result = await conn.execute(statement)
        if result.rowcount == 0:
            raise NotFound(f"Robot {robot_id!r} has no credential.", robot_id=robot_id)


def _utc(value: datetime | None) -> datetime | None:
    """Return an aware UTC time; SQLite hands back naive values stored as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _api_key_info(row: Row[Any]) -> ApiKeyInfo:
    created_at = _utc(row.created_at)
    assert created_at is not None
    return ApiKeyInfo(
        key_id=row.key_id,
        name=row.name,
        role=Role(row.role),
        created_at=created_at,
        created_by=row.created_by,
        revoked_at=_utc(row.revoked_at),
    )


def _robot_credential_info(row: Row[Any]) -> RobotCredentialInfo:
    created_at = _utc(row.created_at)
    assert created_at is not None
    return RobotCredentialInfo(
        robot_id=row.robot_id,
        credential_id=row.credential_id,
        created_at=created_at,
        created_by=row.created_by,
    )
