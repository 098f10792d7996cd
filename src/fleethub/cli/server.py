"""Run the API server inside an existing event loop (used by demo and tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from fleethub.api.app import create_app
from fleethub.security.config import ensure_safe_listen_address
from fleethub.settings import Settings
from fleethub.transports.raw_frames import RawFrameWebSocketProtocol

# The transport's hard frame limit sits above the protocol's, so an oversized
# frame reaches fleethub and gets a structured error instead of a closed socket.
HARD_FRAME_LIMIT_FACTOR = 4


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """Build the uvicorn configuration; raise InsecureConfiguration if unsafe."""
    ensure_safe_listen_address(settings)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws_max_size=settings.max_frame_bytes * HARD_FRAME_LIMIT_FACTOR,
        lifespan="on",
        # uvicorn's own WebSocket protocol, plus direct writes of pre-built
        # frames for the operator stream.
        ws=RawFrameWebSocketProtocol,
        # An event stream whose client stopped reading never finishes its
        # response, and uvicorn would wait for it forever.
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )


class RunningServer:
    """A uvicorn server started in this loop, with the address it bound."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], app: FastAPI):
        self.server = server
        self.task = task
        self.app = app

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def http_url(self) -> str:
        return f"http://{self.server.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.server.config.host}:{self.port}"


async def _serve(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn exits the process when start-up fails
        raise RuntimeError(
            f"The server failed to start (exit status {exc.code}); the log says why."
        ) from None


@contextlib.asynccontextmanager
async def running_server(
    settings: Settings, *, migrate_schema: bool = False
) -> AsyncIterator[RunningServer]:
    """Start fleethub in this loop, yield once it listens, stop it on exit."""
    app = create_app(settings, migrate_schema=migrate_schema)
    server = uvicorn.Server(uvicorn_config(app, settings))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(_serve(server), name="uvicorn")
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("The server stopped before it started listening.")
        await asyncio.sleep(0.02)
    try:
        yield RunningServer(server, task, app)
    finally:
        server.should_exit = True
        await task
