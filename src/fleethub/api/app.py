"""The FastAPI application and its lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, WebSocket

from fleethub import __version__
from fleethub.api.errors import install_error_handlers
from fleethub.api.routes import events, health, robots
from fleethub.security.install import install_security
from fleethub.services import Services, build_services
from fleethub.settings import Settings
from fleethub.transports.websocket import serve_robot


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    migrate_schema: bool = False,
) -> FastAPI:
    """Build the application; the lifespan builds (or adopts) and closes the services."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        app.state.services = services or await build_services(
            settings, migrate_schema=migrate_schema
        )
        try:
            yield
        finally:
            if owned:
                await app.state.services.close()

    app = FastAPI(
        title="fleethub",
        version=__version__,
        description="Live state, telemetry history, events and commands for robot fleets.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_security(app, settings)
    app.include_router(health.router)
    app.include_router(robots.router)
    app.include_router(events.router)

    @app.websocket("/ws/robots/{robot_id}")
    async def robot_link(websocket: WebSocket, robot_id: str) -> None:
        await serve_robot(websocket, robot_id)

    return app
