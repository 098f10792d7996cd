"""Credentials for tests that run a server with authentication on.

Usage::

    async with running_server(Settings(auth_enabled=True, ...)) as server:
        headers = await api_key_headers(server, "operator")
        robot_link = await robot_headers(server, "r1")
        robot = RobotClient(server.ws_url, "r1", headers=robot_link)
"""

from __future__ import annotations

from fleethub.cli.server import RunningServer
from fleethub.security.principals import CLI, Role


async def api_key(server: RunningServer, role: Role | str = Role.ADMIN) -> str:
    """Create an API key with ``role`` on the running server and return it."""
    role = Role(role)
    store = server.app.state.services.security.credentials
    _, key = await store.create_api_key(f"test {role.value}", role, CLI)
    return key


async def api_key_headers(
    server: RunningServer, role: Role | str = Role.ADMIN
) -> dict[str, str]:
    """Return an Authorization header with a new API key of ``role``."""
    return {"Authorization": f"Bearer {await api_key(server, role)}"}


async def robot_token(server: RunningServer, robot_id: str) -> str:
    """Issue (or replace) the credential of ``robot_id`` and return it."""
    store = server.app.state.services.security.credentials
    _, token = await store.issue_robot_credential(robot_id, CLI, replace=True)
    return token


async def robot_headers(server: RunningServer, robot_id: str) -> dict[str, str]:
    """Return the robot link's Authorization header for ``robot_id``."""
    return {"Authorization": f"Bearer {await robot_token(server, robot_id)}"}
