"""The subscriber process of the fan-out scenario: operators on ``/ws/fleet``.

Each subscriber keeps one WebSocket open and, for every robot state it
receives, records how long ago the load process stamped it. The state's
``timestamp`` is the load process's wall clock at send time, and both
processes run on the same machine, so they read the same clock.

A frame carries one message or a ``batch`` of them; every ``state_update``
counts as one state. This process shares two cores with the server and the
load, so it runs on uvloop, reads frames with the lean client in
:mod:`fleethub.bench.wsclient`, and decodes each frame once into structs
that keep only the message type and the state's timestamp.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from datetime import datetime
from typing import Any

import msgspec
import uvloop

from fleethub.bench.stats import LatencySummary, summarize
from fleethub.bench.wsclient import ClientProtocol, HandshakeFailed, open_client

FLEET_PATH = "/ws/fleet"


class StateData(msgspec.Struct):
    timestamp: datetime


class StateUpdate(msgspec.Struct, tag="state_update", tag_field="type"):
    data: StateData


class Other(msgspec.Struct, tag_field="type"):
    """Any message but a state; only its type is read."""


class Event(Other, tag="event"):
    pass


class Missed(Other, tag="missed"):
    pass


class Subscribed(Other, tag="subscribed"):
    pass


class Error(Other, tag="error"):
    pass


Item = StateUpdate | Event | Missed


class Batch(msgspec.Struct, tag="batch", tag_field="type"):
    items: list[Item]


_FRAME_DECODER = msgspec.json.Decoder(
    StateUpdate | Batch | Event | Missed | Subscribed | Error
)


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
        queue.put(("done", uvloop.run(_run(plan, queue, stop))))
    except BaseException:  # noqa: BLE001 - the harness must hear about any crash
        queue.put(("failed", traceback.format_exc()))


async def _run(plan: SubscriberPlan, queue: Any, stop: Any) -> SubscriberResult:
    url = plan.ws_url + FLEET_PATH
    if plan.batch_ms:
        url += f"?batch_ms={plan.batch_ms}"
    recorder = Recorder()
    try:
        first = await open_client(url, recorder.on_message, time.time)
    except HandshakeFailed as exc:
        detail = f"{FLEET_PATH} answered HTTP {exc.status}"
        return SubscriberResult(False, 0, 0, LatencySummary(), detail)
    gate = asyncio.Semaphore(plan.connect_concurrency)

    async def open_gated() -> ClientProtocol | None:
        async with gate:
            try:
                return await open_client(url, recorder.on_message, time.time)
            except (OSError, TimeoutError, HandshakeFailed):
                return None

    others = await asyncio.gather(*(open_gated() for _ in range(plan.subscribers - 1)))
    sockets = [first, *(ws for ws in others if ws is not None)]
    queue.put(("subscribed", {"subscribers": len(sockets)}))
    await asyncio.to_thread(stop.wait)
    recording = recorder.latencies
    recorder.latencies = []
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    detail = (
        f"{recorder.undecodable} undecodable frames" if recorder.undecodable else ""
    )
    return SubscriberResult(
        True, len(sockets), len(recording), summarize(recording), detail
    )


class Recorder:
    """Collect the delivery latency of every state in every frame received."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.undecodable = 0

    def on_message(self, raw: bytes | memoryview, received_at: float) -> None:
        try:
            frame = _FRAME_DECODER.decode(raw)
        except msgspec.DecodeError:
            self.undecodable += 1
            return
        if type(frame) is StateUpdate:
            self.latencies.append(received_at - frame.data.timestamp.timestamp())
        elif type(frame) is Batch:
            append = self.latencies.append
            for item in frame.items:
                if type(item) is StateUpdate:
                    append(received_at - item.data.timestamp.timestamp())
