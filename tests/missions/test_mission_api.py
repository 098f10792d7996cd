"""The mission REST API: bad input, listing and unknown ids."""

from __future__ import annotations

from datetime import datetime

import httpx

from fleethub.cli.server import RunningServer
from tests.lifecycle_support import later, register_robot

WAYPOINT = {"x": 1.0, "y": 2.0}

BAD_MISSIONS = [
    ("no waypoints", {"waypoints": []}, 400, "no_waypoints"),
    ("missing waypoints", {}, 422, "invalid_request"),
    ("x out of range", {"waypoints": [{"x": 2e6, "y": 0}]}, 400, "invalid_waypoint"),
    ("y text", {"waypoints": [{"x": 0, "y": "north"}]}, 422, "invalid_request"),
    (
        "yaw out of range",
        {"waypoints": [{"x": 0, "y": 0, "yaw": 9}]},
        400,
        "invalid_waypoint",
    ),
    (
        "zero tolerance",
        {"waypoints": [{"x": 0, "y": 0, "tolerance": 0}]},
        400,
        "invalid_waypoint",
    ),
    (
        "bad task type",
        {"waypoints": [{"x": 0, "y": 0, "task": {"type": "no spaces"}}]},
        400,
        "invalid_command_type",
    ),
    (
        "unknown robot",
        {"waypoints": [WAYPOINT], "robot_id": "ghost"},
        404,
        "robot_not_found",
    ),
    (
        "bad robot id",
        {"waypoints": [WAYPOINT], "robot_id": "no/slash"},
        400,
        "invalid_robot_id",
    ),
    (
        "deadline passed",
        {"waypoints": [WAYPOINT], "deadline": "2020-01-01T00:00:00Z"},
        400,
        "invalid_deadline",
    ),
    (
        "deadline without zone",
        {"waypoints": [WAYPOINT], "deadline": "2999-01-01T00:00:00"},
        400,
        "timestamp_missing_timezone",
    ),
    ("zero timeout", {"waypoints": [WAYPOINT], "timeout_s": 0}, 400, "invalid_timeout"),
    ("unknown field", {"waypoints": [WAYPOINT], "speed": 3}, 422, "invalid_request"),
]


async def test_bad_missions_are_rejected_with_codes(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Each bad mission request gets a structured error and stores nothing."""
    await register_robot(server, "r1")

    for case, body, status, code in BAD_MISSIONS:
        response = await http.post("/api/missions", json=body)
        assert response.status_code == status, case
        assert response.json()["error"] == code, case
        assert response.json()["message"], case

    assert (await http.get("/api/missions")).json()["items"] == []


async def test_non_finite_waypoints_are_rejected(http: httpx.AsyncClient) -> None:
    """NaN and Infinity in a waypoint are rejected as invalid JSON (RFC 8259)."""
    bodies = [
        b'{"waypoints": [{"x": NaN, "y": 0}]}',
        b'{"waypoints": [{"x": 0, "y": 0}, {"x": 0, "y": -Infinity}]}',
    ]
    for raw in bodies:
        response = await http.post(
            "/api/missions", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_json"


async def test_too_many_waypoints_are_rejected(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """A mission longer than mission_max_waypoints is rejected."""
    limit = server.app.state.services.settings.mission_max_waypoints
    body = {"waypoints": [WAYPOINT] * (limit + 1)}

    response = await http.post("/api/missions", json=body)

    assert response.status_code == 400
    assert response.json()["error"] == "too_many_waypoints"


async def test_unknown_mission_id_is_not_found(http: httpx.AsyncClient) -> None:
    """Reading or cancelling an unknown mission id returns mission_not_found."""
    read = await http.get("/api/missions/nope")
    cancel = await http.post("/api/missions/nope/cancel")

    assert read.status_code == 404
    assert read.json()["error"] == "mission_not_found"
    assert cancel.status_code == 404
    assert cancel.json()["error"] == "mission_not_found"


async def test_list_missions_filters_and_pages(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Missions list newest first, filtered by status, one page at a time."""
    ids = []
    for _ in range(3):
        created = await http.post("/api/missions", json={"waypoints": [WAYPOINT]})
        ids.append(created.json()["mission_id"])
    await http.post(f"/api/missions/{ids[1]}/cancel")

    page1 = (await http.get("/api/missions", params={"limit": 2})).json()
    page2 = (
        await http.get(
            "/api/missions", params={"limit": 2, "before": page1["next_before"]}
        )
    ).json()
    pending = (await http.get("/api/missions", params={"status": "pending"})).json()

    assert [m["mission_id"] for m in page1["items"]] == [ids[2], ids[1]]
    assert [m["mission_id"] for m in page2["items"]] == [ids[0]]
    assert page2["next_before"] is None
    assert [m["mission_id"] for m in pending["items"]] == [ids[2], ids[0]]


async def test_mission_defaults_are_applied(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """A mission without tolerance or timeout gets the configured defaults."""
    settings = server.app.state.services.settings
    deadline = later(3600)

    created = await http.post(
        "/api/missions",
        json={"waypoints": [WAYPOINT], "deadline": deadline.isoformat()},
    )

    body = created.json()
    assert body["status"] == "pending"
    assert body["waypoints"][0]["tolerance"] == settings.mission_default_tolerance_m
    assert body["timeout_s"] == settings.mission_default_timeout_s
    assert datetime.fromisoformat(body["deadline"]) == deadline
