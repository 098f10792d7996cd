"""Which role each request needs, decided from its method and path alone.

Deciding from the path rather than from decorators on the routes means a
route added later is covered by the default rule: GET, HEAD and OPTIONS need
a viewer, every other method an operator. The exceptions:

* ``/healthz``, ``/readyz`` and the dashboard's ``/login`` page are public;
  so are ``/docs``, ``/redoc`` and ``/openapi.json`` when ``docs_public`` is set.
* ``/api/keys``, ``/api/audit``, ``/api/webhooks``, ``/api/robot-credentials``
  and ``/api/robots/{robot_id}/credentials`` need an admin for every method.
* Writes under ``/api/rules`` need an admin; reading rules needs a viewer.
* ``/metrics`` needs the role in ``metrics_access``, or nothing when it is
  ``public``.
* The robot link ``/ws/robots/{robot_id}`` needs the credential of that robot;
  no other credential opens it, and a robot credential opens nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleethub.security.principals import Role
from fleethub.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/login"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
ADMIN_PATHS = re.compile(
    r"/api/(keys|audit|webhooks|robot-credentials)(/.*)?"
    r"|/api/robots/[^/]+/credentials(/.*)?"
)
ADMIN_WRITE_PATHS = re.compile(r"/api/rules(/.*)?")
# Everything after the prefix is the robot id, so an id holding a "/" fails
# validation with invalid_robot_id instead of falling through to another rule.
ROBOT_LINK_PATH = re.compile(r"/ws/robots/(?P<robot_id>.*)", re.DOTALL)


@dataclass(frozen=True)
class Access:
    """What a request needs: nothing, a minimum role, or one robot's credential."""

    public: bool = False
    role: Role = Role.VIEWER
    robot_id: str | None = None


PUBLIC = Access(public=True)


class AccessPolicy:
    """The access rules, with the parts that depend on the settings filled in."""

    def __init__(self, settings: Settings) -> None:
        self.public_paths = PUBLIC_PATHS | (
            DOCS_PATHS if settings.docs_public else set()
        )
        metrics = settings.metrics_access
        self.metrics = PUBLIC if metrics == "public" else Access(role=Role(metrics))

    def for_http(self, method: str, path: str) -> Access:
        """Return the access rule of an HTTP request."""
        if path in self.public_paths:
            return PUBLIC
        if path in ("/metrics", "/metrics/"):
            return self.metrics
        if ADMIN_PATHS.fullmatch(path):
            return Access(role=Role.ADMIN)
        if method.upper() in READ_METHODS:
            return Access(role=Role.VIEWER)
        if ADMIN_WRITE_PATHS.fullmatch(path):
            return Access(role=Role.ADMIN)
        return Access(role=Role.OPERATOR)

    def for_websocket(self, path: str) -> Access:
        """Return the access rule of a WebSocket handshake."""
        match = ROBOT_LINK_PATH.fullmatch(path)
        if match is not None:
            return Access(robot_id=match["robot_id"])
        return self.for_http("GET", path)
