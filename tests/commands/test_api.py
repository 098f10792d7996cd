"""The command REST API: idempotency, cancel, listing and bad input."""

from __future__ import annotations

import asyncio
import json

import httpx
import websockets

from fleethub.cli.server import RunningServer
from tests.lifecycle_support import (
    WAIT_S,
    EventWatch,
    RecordingRobot,
    connect,
    register_robot,
    services_of,
)


async def test_retried_post_returns_same_command(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """A POST repeated with the same idempotency key creates one command."""
    await register_robot(server, "r1")
    body = {"type": "note", "params": {"n": 1}, "idempotency_key": "job-7"}

    first = await http.post("/api/robots/r1/commands", json=body)
    second = await http.post("/api/robots/r1/commands", json=body)
    by_header = await http.post(
        "/api/robots/r1/commands",
        json={"type": "note", "params": {"n": 1}},
        headers={"Idempotency-Key": "job-7"},
    )
    listed = (await http.get("/api/robots/r1/commands")).json()["items"]

    assert first.status_code == 202
    assert second.status_code == 200
    assert by_header.status_code == 200
    assert second.json()["command_id"] == first.json()["command_id"]
    assert by_header.json()["command_id"] == first.json()["command_id"]
    assert len(listed) == 1


async def test_reused_key_with_other_body_conflicts(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """An idempotency key reused for a different command is rejected."""
    await register_robot(server, "r1")
    body = {"type": "note", "params": {"n": 1}, "idempotency_key": "job-7"}
    await http.post("/api/robots/r1/commands", json=body)

    response = await http.post(
        "/api/robots/r1/commands", json={**body, "params": {"n": 2}}
    )
    listed = (await http.get("/api/robots/r1/commands")).json()["items"]

    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_key_reused"
    assert len(listed) == 1


async def test_same_key_on_two_robots_is_two_commands(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Idempotency keys are scoped to one robot."""
    await register_robot(server, "r1")
    await register_robot(server, "r2")
    body = {"type": "note", "idempotency_key": "k"}

    first = await http.post("/api/robots/r1/commands", json=body)
    second = await http.post("/api/robots/r2/commands", json=body)

    assert first.status_code == 202
    assert second.status_code == 202
    assert first.json()["command_id"] != second.json()["command_id"]


async def test_cancelled_command_is_not_delivered(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """A cancelled queued command never reaches the robot."""
    await register_robot(server, "r1")
    cancelled = (await http.post("/api/robots/r1/commands", json={"type": "a"})).json()
    kept = (await http.post("/api/robots/r1/commands", json={"type": "b"})).json()

    response = await http.post(f"/api/commands/{cancelled['command_id']}/cancel")
    again = await http.post(f"/api/commands/{cancelled['command_id']}/cancel")
    robot = RecordingRobot()
    client = await connect(server, "r1", robot)
    first = await robot.next_command()
    await events.wait_for("command_succeeded", command_id=kept["command_id"])
    await client.close()

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert again.status_code == 409
    assert again.json()["error"] == "command_already_finished"
    assert first["command_id"] == kept["command_id"]
    assert len(robot.received) == 1
    assert "command_cancelled" in events.types(command_id=cancelled["command_id"])


async def test_accepted_command_cannot_be_cancelled(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """Cancelling a command the robot acknowledged is a conflict."""
    robot = RecordingRobot(release=asyncio.Event())
    client = await connect(server, "r1", robot)
    command = (await http.post("/api/robots/r1/commands", json={"type": "a"})).json()
    await events.wait_for("command_acknowledged", command_id=command["command_id"])

    response = await http.post(f"/api/commands/{command['command_id']}/cancel")
    assert robot.release is not None
    robot.release.set()
    await events.wait_for("command_succeeded", command_id=command["command_id"])
    await client.close()

    assert response.status_code == 409
    assert response.json()["error"] == "command_in_progress"


async def test_list_filters_by_status_and_pages(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Listing a robot's commands filters by status and pages newest first."""
    await register_robot(server, "r1")
    ids = []
    for n in range(5):
        created = await http.post("/api/robots/r1/commands", json={"type": f"c{n}"})
        ids.append(created.json()["command_id"])
    await http.post(f"/api/commands/{ids[0]}/cancel")

    page1 = (await http.get("/api/robots/r1/commands", params={"limit": 2})).json()
    page2 = (
        await http.get(
            "/api/robots/r1/commands",
            params={"limit": 2, "before": page1["next_before"]},
        )
    ).json()
    queued = (
        await http.get("/api/robots/r1/commands", params={"status": "queued"})
    ).json()

    assert [c["command_id"] for c in page1["items"]] == [ids[4], ids[3]]
    assert [c["command_id"] for c in page2["items"]] == [ids[2], ids[1]]
    assert [c["command_id"] for c in queued["items"]] == ids[:0:-1]


BAD_COMMANDS = [
    ("unknown robot", "ghost", {"type": "stop"}, 404, "robot_not_found"),
    ("bad type", "r1", {"type": "go to!"}, 400, "invalid_command_type"),
    (
        "go_to without y",
        "r1",
        {"type": "go_to", "params": {"x": 1}},
        400,
        "invalid_params",
    ),
    (
        "go_to text x",
        "r1",
        {"type": "go_to", "params": {"x": "1", "y": 2}},
        400,
        "invalid_params",
    ),
    (
        "go_to far x",
        "r1",
        {"type": "go_to", "params": {"x": 1e9, "y": 2}},
        400,
        "invalid_params",
    ),
    (
        "stop with params",
        "r1",
        {"type": "stop", "params": {"now": 1}},
        400,
        "invalid_params",
    ),
    ("negative ttl", "r1", {"type": "stop", "ttl_s": -1}, 400, "invalid_ttl"),
    ("huge ttl", "r1", {"type": "stop", "ttl_s": 1e12}, 400, "invalid_ttl"),
    (
        "priority too high",
        "r1",
        {"type": "stop", "priority": 1000},
        422,
        "invalid_request",
    ),
    ("unknown field", "r1", {"type": "stop", "colour": "red"}, 422, "invalid_request"),
    ("bad robot id", "bad id!", {"type": "stop"}, 400, "invalid_robot_id"),
]


async def test_bad_commands_are_rejected_with_codes(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Each bad command request gets a structured error and stores nothing."""
    await register_robot(server, "r1")

    for case, robot_id, body, status, code in BAD_COMMANDS:
        response = await http.post(f"/api/robots/{robot_id}/commands", json=body)
        assert response.status_code == status, case
        assert response.json()["error"] == code, case
        assert response.json()["message"], case

    stored = (await http.get("/api/robots/r1/commands")).json()["items"]
    assert stored == []


async def test_non_finite_params_are_rejected(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """NaN or Infinity anywhere in the body is rejected as invalid JSON."""
    await register_robot(server, "r1")
    bodies = [
        b'{"type": "go_to", "params": {"x": NaN, "y": 1}}',
        b'{"type": "custom", "params": {"speeds": [1, Infinity]}}',
    ]
    for raw in bodies:
        response = await http.post(
            "/api/robots/r1/commands",
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_json"


async def test_unknown_command_id_is_not_found(http: httpx.AsyncClient) -> None:
    """Reading or cancelling an unknown command id returns command_not_found."""
    read = await http.get("/api/commands/nope")
    cancel = await http.post("/api/commands/nope/cancel")

    assert read.status_code == 404
    assert read.json()["error"] == "command_not_found"
    assert cancel.status_code == 404
    assert cancel.json()["error"] == "command_not_found"


async def test_bad_command_responses_get_error_frames(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """Duplicate and unknown command responses get error frames."""
    await register_robot(server, "r1")
    command = (await http.post("/api/robots/r1/commands", json={"type": "a"})).json()
    async with websockets.connect(f"{server.ws_url}/ws/robots/r1") as socket:
        frames = [json.loads(await asyncio.wait_for(socket.recv(), WAIT_S))]
        frames.append(json.loads(await asyncio.wait_for(socket.recv(), WAIT_S)))
        responses = [
            {"command_id": command["command_id"], "status": "succeeded"},
            {"command_id": command["command_id"], "status": "succeeded"},
            {"command_id": command["command_id"], "status": "failed"},
            {"command_id": "no-such-command", "status": "acknowledged"},
        ]
        for response in responses:
            await socket.send(
                json.dumps({"type": "command_response", "data": response})
            )
        errors = [
            json.loads(await asyncio.wait_for(socket.recv(), WAIT_S)) for _ in range(3)
        ]

    assert [frame["type"] for frame in frames] == ["welcome", "command"]
    assert [error["code"] for error in errors] == [
        "duplicate_command_response",
        "command_already_finished",
        "unknown_command",
    ]
    stored = (await http.get(f"/api/commands/{command['command_id']}")).json()
    assert stored["status"] == "succeeded"
    assert [t["to_status"] for t in stored["transitions"]] == [
        "queued",
        "sent",
        "succeeded",
    ]


async def test_background_task_expires_commands(tmp_path) -> None:
    """The lifecycle task started with the server runs the sweeps on its own."""
    from fleethub.cli.server import running_server
    from tests.lifecycle_support import make_settings

    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path}/fleethub.db", lifecycle_sweep_interval_s=0.05
    )
    async with running_server(settings, migrate_schema=True) as server:
        watch = EventWatch(services_of(server))
        await register_robot(server, "r1")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            body = {"type": "stop", "ttl_s": 0.01}
            command = (await http.post("/api/robots/r1/commands", json=body)).json()
            await watch.wait_for("command_expired", command_id=command["command_id"])
        watch.close()
