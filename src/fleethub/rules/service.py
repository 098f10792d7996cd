"""Run the rules: time-based evaluation, alerts, actions and rule editing.

The ingest pipeline calls :meth:`RuleEngine.evaluate` inline and hands every
event it emits to :meth:`RuleService.offer`, which only appends to a bounded
queue. One dispatcher task then, in order of emission:

- stores alerts opened and cleared by rule events;
- sends the rule's command to the robot;
- runs event rules on events that no rule published;
- passes the event on to the webhooks unless its rule turned them off.

A second task calls :meth:`RuleEngine.tick` every ``rules_tick_interval_s``
so that ``sustained_for_s`` and staleness rules fire without a new state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import ValidationError

from fleethub.errors import Conflict, FleethubError, NotFound
from fleethub.logs import should_log_repeat
from fleethub.models import Event, Severity, utcnow
from fleethub.rules.engine import RuleEngine
from fleethub.rules.model import Rule
from fleethub.storage.events_sql import Alert, AlertStore, RuleStore

logger = logging.getLogger(__name__)

RULE_COMMAND_PRIORITY = 50
RULE_COMMAND_TTL_S = 60.0

Emit = Callable[[Event], Awaitable[None]]


class CommandSender(Protocol):
    """Interface the rules use to send a robot a command."""

    async def submit(
        self,
        robot_id: str,
        command_type: str,
        params: dict[str, Any],
        *,
        priority: int = 0,
        ttl_s: float | None = None,
    ) -> Any: ...


class EventSink(Protocol):
    """Receiver of events after the rules have seen them (the webhooks)."""

    def offer(self, event: Event) -> None: ...


class RuleService:
    """Own the rule engine's background work, its alerts and rule edits."""

    def __init__(
        self,
        engine: RuleEngine,
        rule_store: RuleStore,
        alert_store: AlertStore,
        *,
        emit: Emit,
        commands: CommandSender,
        sink: EventSink | None = None,
        tick_interval_s: float = 1.0,
        max_queue: int = 10_000,
    ) -> None:
        self.engine = engine
        self.rule_store = rule_store
        self.alert_store = alert_store
        self.emit = emit
        self.commands = commands
        self.sink = sink
        self.tick_interval_s = tick_interval_s
        self.dropped = 0
        self._queue: deque[Event] = deque(maxlen=max_queue)
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Apply the stored rule edits, restore open alerts and start the tasks."""
        for rule_id, definition in (await self.rule_store.overrides()).items():
            if definition is None:
                self.engine.remove(rule_id)
                continue
            try:
                self.engine.put(Rule.model_validate(definition))
            except ValidationError as exc:
                # A stored rule this version cannot read; the file's rule stays.
                logger.error(
                    "stored_rule_invalid", extra={"rule_id": rule_id, "error": str(exc)}
                )
        self.engine.restore(
            (alert.rule_id, alert.robot_id, alert.alert_id)
            for alert in await self.alert_store.open_alerts()
            if alert.robot_id is not None
        )
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="rules-dispatch"),
            asyncio.create_task(self._tick_loop(), name="rules-tick"),
        ]
        logger.info("rules_started", extra={"rules": len(self.engine.rules)})

    async def close(self) -> None:
        """Handle the events already queued, then stop the tasks."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_idle(), timeout=5.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def offer(self, event: Event) -> None:
        """Queue an emitted event without waiting; the oldest is dropped when full."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            if should_log_repeat(self.dropped):
                logger.warning(
                    "rules_queue_full",
                    extra={"event_type": event.type, "dropped": self.dropped},
                )
        self._queue.append(event)
        self._idle.clear()
        self._ready.set()

    async def wait_idle(self) -> None:
        """Wait until every queued event has been handled."""
        await self._idle.wait()

    async def run_tick(self) -> None:
        """Evaluate time-based rules once and emit what fires or clears."""
        for event in self.engine.tick():
            await self.emit(event)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval_s)
            try:
                await self.run_tick()
            except Exception:
                logger.exception("rules_tick_failed")

    async def _dispatch_loop(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                event = self._queue.popleft()
                try:
                    await self._handle(event)
                except Exception:
                    logger.exception(
                        "rules_dispatch_failed",
                        extra={"event_type": event.type, "event_id": event.event_id},
                    )
            self._idle.set()

    async def _handle(self, event: Event) -> None:
        rule_id = event.data.get("rule_id")
        rule = self.engine.get(rule_id) if isinstance(rule_id, str) else None
        # Offered first, so webhooks see a source event before the alert it raises.
        if self.sink is not None and (rule is None or rule.actions.webhooks):
            self.sink.offer(event)
        if rule_id is None:
            for fired in self.engine.evaluate_event(event):
                await self.emit(fired)
        elif rule is not None:
            await self._apply(rule, event)

    async def _apply(self, rule: Rule, event: Event) -> None:
        """Store the alert change an event of ``rule`` carries and run its command."""
        lifecycle = event.data.get("alert")
        alert_id = str(event.data.get("alert_id"))
        if lifecycle == "cleared":
            await self.alert_store.clear(alert_id, event.timestamp)
            return
        if lifecycle != "opened":
            return
        await self.alert_store.open(_alert(rule, event, alert_id))
        logger.info(
            "alert_opened",
            extra={
                "rule_id": rule.id,
                "robot_id": event.robot_id,
                "alert_id": alert_id,
            },
        )
        command = rule.actions.command
        if command is not None and event.robot_id is not None:
            await self._send_command(rule, event.robot_id, command.type, command.params)

    async def _send_command(
        self, rule: Rule, robot_id: str, command_type: str, params: dict[str, Any]
    ) -> None:
        try:
            # A rule's command is urgent (a stop, a return to charge) and stale
            # after a minute, so it jumps the queue and expires.
            await self.commands.submit(
                robot_id,
                command_type,
                dict(params),
                priority=RULE_COMMAND_PRIORITY,
                ttl_s=RULE_COMMAND_TTL_S,
            )
        except FleethubError as exc:
            logger.warning(
                "rule_command_failed",
                extra={"rule_id": rule.id, "robot_id": robot_id, "error": exc.message},
            )

    # Rule editing, used by the API.

    async def create_rule(self, rule: Rule) -> Rule:
        """Add a rule, or raise :class:`Conflict` when its id is taken."""
        if self.engine.get(rule.id) is not None:
            raise Conflict(
                f"Rule {rule.id!r} already exists; use PUT to replace it.",
                code="rule_exists",
                rule_id=rule.id,
            )
        return await self._save(rule)

    async def replace_rule(self, rule: Rule) -> Rule:
        """Replace an existing rule, or raise :class:`NotFound`."""
        self.require_rule(rule.id)
        return await self._save(rule)

    async def delete_rule(self, rule_id: str) -> None:
        """Delete a rule; its open alerts stay until acknowledged."""
        self.require_rule(rule_id)
        await self.rule_store.save(rule_id, None)
        self.engine.remove(rule_id)

    def require_rule(self, rule_id: str) -> Rule:
        rule = self.engine.get(rule_id)
        if rule is None:
            raise NotFound(f"Rule {rule_id!r} does not exist.", rule_id=rule_id)
        return rule

    async def _save(self, rule: Rule) -> Rule:
        await self.rule_store.save(rule.id, rule.model_dump(mode="json"))
        self.engine.put(rule)
        return rule

    # Alerts, used by the API.

    async def acknowledge(self, alert_id: str, by: str | None) -> Alert:
        """Acknowledge an open alert and publish ``alert_acknowledged``."""
        alert = await self.alert_store.get(alert_id)
        if alert is None:
            raise NotFound(f"Alert {alert_id!r} does not exist.", alert_id=alert_id)
        acknowledged = await self.alert_store.acknowledge(alert_id, by, utcnow())
        if not acknowledged and alert.status != "acknowledged":
            raise Conflict(
                f"Alert {alert_id!r} is {alert.status}; only open alerts can be "
                "acknowledged.",
                code="alert_not_open",
                alert_id=alert_id,
                status=alert.status,
            )
        if acknowledged:
            await self.emit(_acknowledged_event(alert, by))
        updated = await self.alert_store.get(alert_id)
        assert updated is not None
        return updated


def _alert(rule: Rule, event: Event, alert_id: str) -> Alert:
    return Alert(
        alert_id=alert_id,
        rule_id=rule.id,
        robot_id=event.robot_id,
        event_type=event.type,
        severity=event.severity.value,
        status="open",
        opened_at=event.timestamp,
        event_id=event.event_id,
        data=event.data,
    )


def _acknowledged_event(alert: Alert, by: str | None) -> Event:
    return Event(
        type="alert_acknowledged",
        robot_id=alert.robot_id,
        severity=Severity.INFO,
        data={
            "rule_id": alert.rule_id,
            "alert_id": alert.alert_id,
            "alert": "acknowledged",
            "acknowledged_by": by,
        },
    )
