"""The FastAPI application and its lifespan."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import FastAPI, WebSocket

from fleethub import __version__
from fleethub.api.errors import document_error_responses, install_error_handlers
from fleethub.api.routes import (
    alerts,
    commands,
    events,
    health,
    missions,
    observability,
    robots,
    rules,
    stream,
    webhooks,
)
from fleethub.errors import InvalidRobotId
from fleethub.ids import validate_robot_id
from fleethub.logs import log_context
from fleethub.observability.requests import RequestContextMiddleware
from fleethub.observability.sentry import close_sentry, init_sentry
from fleethub.security.install import install_security
from fleethub.security.middleware import route_path
from fleethub.security.policy import ROBOT_LINK_PATH
from fleethub.services import Services, build_services
from fleethub.settings import Settings
from fleethub.transports.websocket import serve_robot


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    migrate_schema: bool = False,
    freeze_startup_objects: bool = False,
) -> FastAPI:
    """Build the app; its lifespan builds (or adopts) and closes the services.

    With ``freeze_startup_objects`` the lifespan moves every object alive once
    the services are up (modules, the app, settings, open pools) out of the
    garbage collector's reach. Only a process that serves one app for its
    whole life should ask for it, because frozen objects are never freed.
    """
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        sentry_on = init_sentry(settings)
        app.state.services = services or await build_services(
            settings, migrate_schema=migrate_schema
        )
        if freeze_startup_objects:
            _freeze_startup_objects()
        try:
            yield
        finally:
            if owned:
                await app.state.services.close()
            if sentry_on:
                close_sentry()

    app = FastAPI(
        title="fleethub",
        version=__version__,
        description=(
            "Live state, telemetry history, events and commands for robot fleets."
        ),
        lifespan=lifespan,
    )
    install_error_handlers(app)
    document_error_responses(app)
    install_security(app, settings)
    # Added last, so it runs first: every response, a 401 included, has a request id.
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(robots.router)
    app.include_router(events.router)
    app.include_router(observability.router)
    app.include_router(rules.router)
    app.include_router(alerts.router)
    app.include_router(webhooks.router)
    app.include_router(stream.router)
    app.include_router(commands.router)
    app.include_router(missions.router)

    # The ``path`` converter lets an empty id or one with an encoded "/" reach
    # serve_robot, which rejects it with an error frame and close code 1008
    # instead of a bare HTTP 403 from the router.
    @app.websocket("/ws/robots/{robot_id:path}")
    async def robot_link(websocket: WebSocket, robot_id: str) -> None:
        # The route pattern ends in "$", which also matches before a trailing
        # newline, so "r1%0A" would arrive as "r1". Read the id from the path
        # with the pattern the access policy uses, so it is validated whole.
        match = ROBOT_LINK_PATH.fullmatch(route_path(websocket.scope))
        if match is not None:
            robot_id = match["robot_id"]
        loggable_id = _loggable_robot_id(robot_id)
        with log_context(robot_id=loggable_id, component="robot_link"):
            await serve_robot(websocket, robot_id)

    return app


def _loggable_robot_id(robot_id: str) -> str | None:
    """Return the robot id if valid; an invalid one stays out of the log context."""
    try:
        return validate_robot_id(robot_id)
    except InvalidRobotId:
        return None


def _freeze_startup_objects() -> None:
    """Keep the cyclic garbage collector off the objects built at start-up.

    A full collection walks every tracked object, and a started server has
    a few hundred thousand of them (imported modules, FastAPI's routes and
    models, SQLAlchemy's metadata). Under the fan-out benchmark's ingest load
    (``fleethub bench --scenario fanout``, 2 cores) such a collection paused
    the event loop for 100-220 ms, which showed up directly in
    acknowledgement and live-stream latency. Objects frozen here are never
    collected, so garbage is collected first.
    """
    gc.collect()
    gc.freeze()
