"""Roles and the authenticated caller of a request."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from fleethub.errors import InvalidInput


class Role(enum.StrEnum):
    """What an operator or service may do; each role includes the ones below it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def includes(self, required: Role) -> bool:
        """Return True when this role may do what ``required`` may do."""
        return self.rank >= required.rank

    @classmethod
    def parse(cls, name: str) -> Role:
        """Return the role called ``name``, or raise ``invalid_role``."""
        try:
            return cls(name)
        except ValueError:
            raise InvalidInput(
                f"Role {name!r} is unknown; use viewer, operator or admin.",
                code="invalid_role",
                role=name,
            ) from None


_RANKS = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}

# "client" is the address of a caller whose credential failed, as the rate
# limiter counts it.
PrincipalKind = Literal["api_key", "jwt", "robot", "anonymous", "cli", "client"]


@dataclass(frozen=True)
class Principal:
    """The caller of a request, as the audit log and the rate limiter see it.

    ``role`` is None for robots: a robot credential opens the robot link of its
    own ``robot_id`` and nothing else.
    """

    kind: PrincipalKind
    subject: str
    role: Role | None
    name: str = ""
    robot_id: str | None = None

    @property
    def rate_limit_key(self) -> str:
        return f"{self.kind}:{self.subject}"


# The caller when authentication is switched off (loopback only): every route
# is open, so it acts as an admin.
ANONYMOUS = Principal(kind="anonymous", subject="anonymous", role=Role.ADMIN)

# The operator of the command line, who has direct access to the database.
CLI = Principal(kind="cli", subject="cli", role=Role.ADMIN, name="command line")
