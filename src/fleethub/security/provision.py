"""Issue robot credentials through the admin API, for simulated fleets."""

from __future__ import annotations

import httpx

from fleethub.errors import FleethubError


def http_base_url(websocket_url: str) -> str:
    """Return the HTTP base URL of a server given its WebSocket base URL."""
    if websocket_url.startswith("wss://"):
        return "https://" + websocket_url.removeprefix("wss://")
    return "http://" + websocket_url.removeprefix("ws://")


async def issue_robot_tokens(
    websocket_url: str, api_key: str | None, robot_ids: list[str]
) -> dict[str, str]:
    """Issue (or replace) each robot's credential; return tokens by robot id.

    Without an ``api_key`` nothing is issued and the result is empty, which
    suits a server running with authentication switched off.
    """
    if api_key is None:
        return {}
    tokens: dict[str, str] = {}
    async with httpx.AsyncClient(
        base_url=http_base_url(websocket_url), headers={"X-API-Key": api_key}
    ) as http:
        for robot_id in robot_ids:
            response = await http.post(
                f"/api/robots/{robot_id}/credentials", params={"replace": "true"}
            )
            if response.status_code != 201:
                raise FleethubError(
                    f"Issuing the credential of robot {robot_id!r} failed with HTTP "
                    f"{response.status_code}: {response.text[:200]}",
                    code="provisioning_failed",
                )
            tokens[robot_id] = response.json()["token"]
    return tokens
