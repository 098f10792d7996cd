"""The fleethub exception tree.

Every error the core raises derives from :class:`FleethubError` and carries a
stable machine-readable ``code``. The edges translate them: the HTTP layer to
a status code and ``{"error": code, "message": ..., "details": {...}}``, the
robot link to an ``error`` frame.

::

    FleethubError
    ├── InvalidInput            400 / error frame, bad data from a client or robot
    │   └── InvalidRobotId
    ├── NotFound                404
    ├── Conflict                409
    │   └── RobotNotConnected
    ├── Overloaded              503 / error frame, retry later
    ├── StorageUnavailable      503
    ├── NotReady                503, a readiness check failed
    ├── LiveStateUnavailable    503, Redis (live state) unreachable
    ├── Unauthenticated         401, missing or invalid credential
    ├── Forbidden               403, credential lacks the role or robot id
    ├── RateLimited             429 / error frame, with a retry-after hint
    ├── PayloadTooLarge         413
    └── InsecureConfiguration   settings that would expose the server
"""

from __future__ import annotations

from typing import Any


class FleethubError(Exception):
    """Base of every error fleethub raises on purpose."""

    code = "internal_error"
    status_code = 500
    retryable = False

    def __init__(
        self, message: str, *, code: str | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON body shared by HTTP responses and error frames."""
        return {"error": self.code, "message": self.message, "details": self.details}


class InvalidInput(FleethubError):
    """Input that breaks the protocol or a validation rule."""

    code = "invalid_input"
    status_code = 400


class InvalidRobotId(InvalidInput):
    """A robot id that is empty, too long or has characters outside the safe set."""

    code = "invalid_robot_id"


class NotFound(FleethubError):
    """A robot, command or other resource that does not exist."""

    code = "not_found"
    status_code = 404


class Conflict(FleethubError):
    """A request that clashes with the current state of a resource."""

    code = "conflict"
    status_code = 409


class RobotNotConnected(Conflict):
    """A request that needs a live connection to a robot that has none."""

    code = "robot_not_connected"


class Overloaded(FleethubError):
    """The server cannot accept more work right now; the client should retry."""

    code = "overloaded"
    status_code = 503
    retryable = True


class StorageUnavailable(FleethubError):
    """The database cannot be reached or did not respond in time."""

    code = "storage_unavailable"
    status_code = 503
    retryable = True


class NotReady(FleethubError):
    """A dependency the server needs (database, Redis, broker) is failing."""

    code = "not_ready"
    status_code = 503
    retryable = True


class LiveStateUnavailable(FleethubError):
    """The shared live state (Redis) cannot be reached or did not respond in time."""

    code = "live_state_unavailable"
    status_code = 503
    retryable = True


class Unauthenticated(FleethubError):
    """A request without a credential, or with one that is invalid or revoked."""

    code = "unauthenticated"
    status_code = 401


class Forbidden(FleethubError):
    """A valid credential whose role or robot id does not allow the request."""

    code = "forbidden"
    status_code = 403


class RateLimited(FleethubError):
    """A credential that sent more requests or messages than its rate limit allows."""

    code = "rate_limited"
    status_code = 429
    retryable = True


class PayloadTooLarge(FleethubError):
    """A request body larger than the configured maximum."""

    code = "request_too_large"
    status_code = 413


class InsecureConfiguration(FleethubError):
    """Settings that would expose the server, rejected at start-up."""

    code = "insecure_configuration"
