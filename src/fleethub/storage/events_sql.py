"""SQL storage for edited rules, alerts, webhooks and their outbox.

These stores share :class:`fleethub.storage.sql.SqlStorage`'s engine and run
on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleethub.errors import StorageUnavailable
from fleethub.models import utcnow
from fleethub.storage.schema_events import (
    alerts,
    rules,
    webhook_deliveries,
    webhook_outbox,
    webhooks,
)
from fleethub.storage.sql import _utc

OPEN_STATUSES = ("open", "acknowledged")


class Alert(msgspec.Struct, kw_only=True):
    """A rule firing for one robot, open until it clears or is acknowledged."""

    alert_id: str
    rule_id: str
    robot_id: str | None
    event_type: str
    severity: str
    status: str
    opened_at: datetime
    event_id: str
    data: dict[str, Any]
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    cleared_at: datetime | None = None


class Webhook(msgspec.Struct, kw_only=True):
    """A registered webhook; ``secret`` signs every delivery."""

    webhook_id: str
    url: str
    event_types: list[str]
    severities: list[str]
    secret: str
    created_at: datetime


class OutboxItem(msgspec.Struct, kw_only=True):
    """One event still to deliver to one webhook."""

    id: int
    webhook_id: str
    event_id: str
    payload: str
    created_at: datetime
    attempts: int


class Delivery(msgspec.Struct, kw_only=True):
    """One HTTP attempt to deliver an event to a webhook."""

    id: int
    webhook_id: str
    event_id: str
    attempt: int
    outcome: str
    status_code: int | None
    error: str | None
    duration_s: float
    ts: datetime


class _Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @contextlib.asynccontextmanager
    async def _connect(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """Open a connection (a transaction when writing), translating outages."""
        try:
            if write:
                async with self.engine.begin() as conn:
                    yield conn
            else:
                async with self.engine.connect() as conn:
                    yield conn
        except (OperationalError, OSError) as exc:
            raise StorageUnavailable(f"Database unavailable: {exc}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StorageUnavailable(f"Database connection lost: {exc}") from exc
            raise


class RuleStore(_Store):
    """Rules created, replaced or deleted through the API."""

    async def overrides(self) -> dict[str, dict[str, Any] | None]:
        """Return every stored rule by id; None marks a deleted rule."""
        async with self._connect() as conn:
            result = await conn.execute(select(rules))
            return {
                row.rule_id: None if row.deleted else row.definition for row in result
            }

    async def save(self, rule_id: str, definition: dict[str, Any] | None) -> None:
        """Store a rule's definition, or a deletion marker when it is None."""
        values = {
            "definition": definition,
            "deleted": definition is None,
            "updated_at": utcnow(),
        }
        async with self._connect(write=True) as conn:
            await conn.execute(delete(rules).where(rules.c.rule_id == rule_id))
            await conn.execute(insert(rules).values(rule_id=rule_id, **values))


class AlertStore(_Store):
    """Alerts: opened and cleared by rules, acknowledged by operators."""

    async def open(self, alert: Alert) -> None:
        values = msgspec.to_builtins(alert, builtin_types=(datetime,))
        async with self._connect(write=True) as conn:
            await conn.execute(insert(alerts).values(**values))

    async def clear(self, alert_id: str, at: datetime) -> None:
        """Mark an open or acknowledged alert cleared."""
        query = (
            update(alerts)
            .where(alerts.c.alert_id == alert_id, alerts.c.status.in_(OPEN_STATUSES))
            .values(status="cleared", cleared_at=at)
        )
        async with self._connect(write=True) as conn:
            await conn.execute(query)

    async def acknowledge(self, alert_id: str, by: str | None, at: datetime) -> bool:
        """Acknowledge an open alert; return False when it is not open."""
        query = (
            update(alerts)
            .where(alerts.c.alert_id == alert_id, alerts.c.status == "open")
            .values(status="acknowledged", acknowledged_at=at, acknowledged_by=by)
        )
        async with self._connect(write=True) as conn:
            result = await conn.execute(query)
            return result.rowcount == 1

    async def get(self, alert_id: str) -> Alert | None:
        async with self._connect() as conn:
            result = await conn.execute(
                select(alerts).where(alerts.c.alert_id == alert_id)
            )
            row = result.first()
        return None if row is None else _alert(row._mapping)

    async def find(
        self,
        *,
        status: str | None = None,
        robot_id: str | None = None,
        rule_id: str | None = None,
        limit: int = 100,
        before: datetime | None = None,
    ) -> list[Alert]:
        """Return alerts newest first, filtered by status, robot and rule."""
        query = select(alerts)
        if status is not None:
            query = query.where(alerts.c.status == status)
        if robot_id is not None:
            query = query.where(alerts.c.robot_id == robot_id)
        if rule_id is not None:
            query = query.where(alerts.c.rule_id == rule_id)
        if before is not None:
            query = query.where(alerts.c.opened_at < before)
        query = query.order_by(alerts.c.opened_at.desc()).limit(limit)
        async with self._connect() as conn:
            result = await conn.execute(query)
            return [_alert(row._mapping) for row in result]

    async def open_alerts(self) -> list[Alert]:
        """Return every alert that has not cleared."""
        query = select(alerts).where(alerts.c.status.in_(OPEN_STATUSES))
        async with self._connect() as conn:
            result = await conn.execute(query)
            return [_alert(row._mapping) for row in result]


def _alert(values: Any) -> Alert:
    times = ("opened_at", "acknowledged_at", "cleared_at")
    return Alert(**{**values, **{name: _utc(values[name]) for name in times}})


class WebhookStore(_Store):
    """Webhooks, the outbox of undelivered events and the delivery records."""

    async def add(self, webhook: Webhook) -> None:
        values = msgspec.to_builtins(webhook, builtin_types=(datetime,))
        async with self._connect(write=True) as conn:
            await conn.execute(insert(webhooks).values(**values))

    async def remove(self, webhook_id: str) -> bool:
        """Delete a webhook with its backlog; return False when it did not exist."""
        async with self._connect(write=True) as conn:
            result = await conn.execute(
                delete(webhooks).where(webhooks.c.webhook_id == webhook_id)
            )
            await conn.execute(
                delete(webhook_outbox).where(webhook_outbox.c.webhook_id == webhook_id)
            )
            return result.rowcount == 1

    async def all(self) -> list[Webhook]:
        async with self._connect() as conn:
            result = await conn.execute(
                select(webhooks).order_by(webhooks.c.created_at)
            )
            return [
                Webhook(**{**row._mapping, "created_at": _utc(row.created_at)})
                for row in result
            ]

    async def enqueue(self, items: Sequence[dict[str, Any]]) -> None:
        """Insert ``{"webhook_id", "event_id", "payload"}`` rows into the outbox."""
        if not items:
            return
        now = utcnow()
        values = [{**item, "created_at": now, "attempts": 0} for item in items]
        async with self._connect(write=True) as conn:
            await conn.execute(insert(webhook_outbox), values)

    async def pending(self, webhook_id: str, limit: int) -> list[OutboxItem]:
        """Return the oldest undelivered events for one webhook."""
        query = (
            select(webhook_outbox)
            .where(webhook_outbox.c.webhook_id == webhook_id)
            .order_by(webhook_outbox.c.id)
            .limit(limit)
        )
        async with self._connect() as conn:
            result = await conn.execute(query)
            return [
                OutboxItem(**{**row._mapping, "created_at": _utc(row.created_at)})
                for row in result
            ]

    async def settle(self, item_id: int) -> None:
        """Remove a delivered or expired event from the outbox."""
        async with self._connect(write=True) as conn:
            await conn.execute(
                delete(webhook_outbox).where(webhook_outbox.c.id == item_id)
            )

    async def set_attempts(self, item_id: int, attempts: int) -> None:
        query = (
            update(webhook_outbox)
            .where(webhook_outbox.c.id == item_id)
            .values(attempts=attempts)
        )
        async with self._connect(write=True) as conn:
            await conn.execute(query)

    async def record(self, delivery: dict[str, Any]) -> None:
        """Store one delivery attempt (all :class:`Delivery` fields but ``id``)."""
        async with self._connect(write=True) as conn:
            await conn.execute(insert(webhook_deliveries).values(**delivery))

    async def deliveries(
        self, webhook_id: str, limit: int, before_id: int | None = None
    ) -> list[Delivery]:
        """Return a webhook's delivery attempts, newest first."""
        query = select(webhook_deliveries).where(
            webhook_deliveries.c.webhook_id == webhook_id
        )
        if before_id is not None:
            query = query.where(webhook_deliveries.c.id < before_id)
        query = query.order_by(webhook_deliveries.c.id.desc()).limit(limit)
        async with self._connect() as conn:
            result = await conn.execute(query)
            return [Delivery(**{**row._mapping, "ts": _utc(row.ts)}) for row in result]
