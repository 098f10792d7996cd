"""The operator live stream: ``/ws/fleet`` (WebSocket) and ``/api/stream`` (SSE).

Both take the same filters as query parameters: ``robot_ids`` and
``event_types`` (repeated or comma-separated), ``min_severity``, ``states``,
``events`` and ``state_rate_hz``. A WebSocket client may replace them at any
time by sending ``{"type": "subscribe", ...}`` with the same fields. The server
replies with ``{"type": "subscribed", "filters": {...}}`` or an ``error`` message.

Messages are the bus's JSON: ``{"type": "state_update", "robot_id", "data"}``,
``{"type": "event", "data"}`` and ``{"type": "missed", "states": N}`` after
dropped states. A subscriber that falls too far behind is closed with code
4008 (WebSocket), or its event stream ends (SSE).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from sse_starlette import EventSourceResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from fleethub.errors import FleethubError, InvalidInput
from fleethub.security.middleware import WEBSOCKET_TOKEN_PARAMETER
from fleethub.stream.filters import StreamFilters, parse_filters, query_values
from fleethub.stream.hub import Evicted, StreamHub, Subscriber, decode_envelope
from fleethub.transports.raw_frames import raw_writer

logger = logging.getLogger(__name__)

router = APIRouter(tags=["stream"])

CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOO_SLOW = 4008
CLOSE_TIMEOUT_S = 2.0


def _filters_from_query(request: Request | WebSocket) -> StreamFilters:
    params = dict(request.query_params)
    if isinstance(request, WebSocket):
        # A browser cannot set headers on a WebSocket handshake, so it sends
        # its key in the URL; the security middleware has already read it.
        params.pop(WEBSOCKET_TOKEN_PARAMETER, None)
    lists = {
        name: request.query_params.getlist(name)
        for name in ("robot_ids", "event_types")
    }
    return parse_filters(query_values(params, lists), "query")


def _hub(request: Request | WebSocket) -> StreamHub:
    return request.app.state.services.stream


@router.get("/api/stream")
async def stream_events(request: Request) -> EventSourceResponse:
    """Stream states and events as server-sent events, with the /ws/fleet filters."""
    subscriber = _hub(request).connect(_filters_from_query(request))
    return EventSourceResponse(_sse_messages(request, subscriber))


async def _sse_messages(
    request: Request, subscriber: Subscriber
) -> AsyncIterator[dict[str, Any]]:
    hub = _hub(request)
    try:
        while True:
            read = hub.read(subscriber, await hub.wait(subscriber))
            if read is None:
                continue
            hub.commit(subscriber, read)
            for message in read.payload.messages:
                kind = decode_envelope(message).type
                yield {"event": kind, "data": message.decode()}
    except Evicted:
        return
    finally:
        hub.disconnect(subscriber)


@router.websocket("/ws/fleet")
async def fleet_stream(websocket: WebSocket) -> None:
    """Stream states and events to an operator dashboard."""
    await websocket.accept()
    try:
        subscriber = _hub(websocket).connect(_filters_from_query(websocket))
    except FleethubError as exc:
        await websocket.send_json({"type": "error", **exc.to_dict()})
        code = (
            CLOSE_POLICY_VIOLATION if exc.status_code < 500 else CLOSE_TRY_AGAIN_LATER
        )
        await websocket.close(code, exc.code)
        return
    try:
        await _serve(websocket, subscriber)
    finally:
        _hub(websocket).disconnect(subscriber)


async def _serve(websocket: WebSocket, subscriber: Subscriber) -> None:
    await websocket.send_json(_subscribed(subscriber.filters))
    hub = _hub(websocket)
    receiver = asyncio.create_task(_receive_loop(websocket, hub, subscriber))
    evicted = asyncio.create_task(subscriber.evicted.wait())
    tasks = {receiver, evicted}
    writer = raw_writer(websocket.scope)
    if writer is not None:
        # The hub writes pre-built frames itself on its ticks, so no task per
        # subscriber wakes up for each tick.
        hub.push_to(subscriber, writer)
    else:
        tasks.add(asyncio.create_task(_send_loop(websocket, hub, subscriber)))
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if subscriber.evicted.is_set():
        await _close(websocket, CLOSE_TOO_SLOW, subscriber.eviction_reason or "")


async def _send_loop(
    websocket: WebSocket, hub: StreamHub, subscriber: Subscriber
) -> None:
    """Send through ASGI, for servers without the raw-frame extension."""
    with contextlib.suppress(Evicted, WebSocketDisconnect, RuntimeError, OSError):
        while True:
            end = await hub.wait(subscriber)
            batch_ms = subscriber.filters.batch_ms
            if batch_ms:
                # One frame per interval instead of one per message: at
                # dashboard scale the cost is in the number of frames, not
                # their size. The hub's clock aligns the intervals of every
                # subscriber, so equal subscribers share one built frame.
                end = await hub.clock(batch_ms)
            read = hub.read(subscriber, end)
            if read is None:
                continue
            if batch_ms and read.payload.messages:
                await websocket.send_text(read.payload.batch.decode())
            else:
                for message in read.payload.messages:
                    await websocket.send_text(message.decode())
            hub.commit(subscriber, read)


async def _receive_loop(
    websocket: WebSocket, hub: StreamHub, subscriber: Subscriber
) -> None:
    """Apply subscribe messages until the client goes away."""
    while True:
        try:
            values = await websocket.receive_json()
        except WebSocketDisconnect:
            return
        except (ValueError, KeyError, RecursionError):
            # json.loads recurses once per nesting level: a message nested
            # about a thousand deep is bad input, not a reason to drop the link.
            await websocket.send_json(_error("invalid_json", "Message is not JSON."))
            continue
        try:
            if not isinstance(values, dict):
                raise InvalidInput(
                    "Message must be a JSON object.", code="invalid_subscription"
                )
            hub.set_filters(subscriber, parse_filters(values, "message"))
        except InvalidInput as exc:
            await websocket.send_json({"type": "error", **exc.to_dict()})
            continue
        await websocket.send_json(_subscribed(subscriber.filters))


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    """Close the socket; a peer that stopped reading may never take the frame."""
    if websocket.application_state is not WebSocketState.CONNECTED:
        return
    with contextlib.suppress(TimeoutError, RuntimeError, OSError):
        await asyncio.wait_for(websocket.close(code, reason), CLOSE_TIMEOUT_S)


def _subscribed(filters: StreamFilters) -> dict[str, Any]:
    return {"type": "subscribed", "filters": filters.model_dump(mode="json")}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": code, "message": message, "details": {}}
