"""The subscriber process of the fan-out scenario: operators on ``/ws/fleet``.

Each subscriber keeps one WebSocket open and, for every robot state it
receives, records how long ago the load process stamped it. The state's
``timestamp`` is the load process's wall clock at send time, and both
processes run on the same machine, so they read the same clock.

A frame may carry one state or a batch. Any JSON object with a
``timestamp`` and a ``position`` under a ``data`` key, or with a
``robot_id``, a ``position`` and a ``timestamp``, counts as one state.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from datetime import datetime
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from fleethub.bench.stats import LatencySummary, summarize

FLEET_PATH = "/ws/fleet"


class SubscriberPlan(msgspec.Struct, frozen=True):
    """How many subscribers to open on which server."""

    ws_url: str
    subscribers: int
    connect_concurrency: int = 100
    batch_ms: int = 0


class SubscriberResult(msgspec.Struct):
    """States received over all subscribers, and their delivery latency."""

    available: bool
    connected: int
    received: int
    latency: LatencySummary
    detail: str = ""


def subscriber_main(plan: SubscriberPlan, queue: Any, stop: Any) -> None:
    """Subscribe, report ``subscribed``, then record until ``stop`` is set."""
    try:
        queue.put(("done", asyncio.run(_run(plan, queue, stop))))
    except BaseException:  # noqa: BLE001 - the harness must hear about any crash
        queue.put(("failed", traceback.format_exc()))


async def _run(plan: SubscriberPlan, queue: Any, stop: Any) -> SubscriberResult:
    url = plan.ws_url + FLEET_PATH
    if plan.batch_ms:
        url += f"?batch_ms={plan.batch_ms}"
    try:
        first = await _open(url)
    except InvalidStatus as exc:
        detail = f"{FLEET_PATH} answered HTTP {exc.response.status_code}"
        return SubscriberResult(False, 0, 0, LatencySummary(), detail)
    gate = asyncio.Semaphore(plan.connect_concurrency)

    async def open_gated() -> ClientConnection | None:
        async with gate:
            try:
                return await _open(url)
            except (OSError, TimeoutError, WebSocketException):
                return None

    others = await asyncio.gather(*(open_gated() for _ in range(plan.subscribers - 1)))
    sockets = [first, *(ws for ws in others if ws is not None)]
    latencies: list[float] = []
    tasks = [asyncio.create_task(_receive(ws, latencies)) for ws in sockets]
    queue.put(("subscribed", {"subscribers": len(sockets)}))
    await asyncio.to_thread(stop.wait)
    for task in tasks:
        task.cancel()

    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return SubscriberResult(True, len(sockets), len(latencies), summarize(latencies))


async def _open(url: str) -> ClientConnection:
    return await connect(
        url, compression=None, proxy=None, ping_interval=None, max_size=None
    )


async def _receive(ws: ClientConnection, latencies: list[float]) -> None:
    try:
        async for raw in ws:
            received_at = time.time()
            for stamp in _timestamps(msgspec.json.decode(raw)):
                latencies.append(received_at - stamp)
    except (ConnectionClosed, msgspec.DecodeError):
        return


def _timestamps(value: Any) -> list[float]:
    """Return the wall-clock send time of every state found in a decoded frame."""
    found: list[float] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stamp = _state_timestamp(item)
            if stamp is not None:
                found.append(stamp)
            else:
                stack.extend(v for v in item.values() if isinstance(v, list | dict))
    return found


def _state_timestamp(item: dict[str, Any]) -> float | None:
    data = item.get("data")
    if isinstance(data, dict) and "position" in data and "timestamp" in data:
        return _parse(data["timestamp"])
    if "robot_id" in item and "position" in item and "timestamp" in item:
        return _parse(item["timestamp"])
    return None


def _parse(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None
