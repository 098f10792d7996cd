"""Missions over real sockets: assignment, progress, timeouts, reconnects."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fleethub.cli.server import RunningServer, running_server
from fleethub.client.robot import RobotClient
from fleethub.protocol import RobotStatus
from fleethub.sim.robots import SimConfig, make_robot, run_robot
from tests.lifecycle_support import (
    EventWatch,
    RecordingRobot,
    StateFeed,
    connect,
    later,
    make_settings,
    services_of,
)


async def post_mission(http: httpx.AsyncClient, **body: object) -> dict:
    response = await http.post("/api/missions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def get_mission(http: httpx.AsyncClient, mission_id: str) -> dict:
    return (await http.get(f"/api/missions/{mission_id}")).json()


async def report(client: RobotClient, feed: StateFeed, **changes: object) -> None:
    """Send one state and wait until the server has stored it."""
    await client.send_state(feed.next(**changes))
    await client.flush(10)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_mission_goes_to_nearest_eligible_robot(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """Only online, idle robots above the battery reserve qualify; the nearest wins."""
    robots = {
        "low-battery": StateFeed(x=1, y=0, battery=20),
        "moving": StateFeed(x=0, y=1, status=RobotStatus.MOVING),
        "no-battery": StateFeed(x=0, y=-1, battery=None),
        "offline": StateFeed(x=-1, y=0),
        "middle": StateFeed(x=5, y=0),
        "far": StateFeed(x=20, y=0),
    }
    clients = {
        robot_id: await connect(server, robot_id, RecordingRobot(), feed)
        for robot_id, feed in robots.items()
    }
    await clients.pop("offline").close()
    await events.wait_for("robot_disconnected", robot_id="offline")

    mission = await post_mission(http, waypoints=[{"x": 0, "y": 0}])
    for client in clients.values():
        await client.close()

    assert mission["status"] == "assigned"
    assert mission["robot_id"] == "middle"


async def test_simulated_robot_completes_mission(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """A simulated robot drives a two-waypoint mission to completion."""
    config = SimConfig(rate_hz=20, speed_mps=2.0, turn_rate_rps=6.0, wander=False)
    stop = asyncio.Event()
    fleet = [make_robot(index, config) for index in range(2)]
    sims = [
        asyncio.create_task(run_robot(robot, server.ws_url, stop)) for robot in fleet
    ]
    for robot in fleet:
        await events.wait_for("robot_connected", robot_id=robot.robot_id)
    dock_x, dock_y = fleet[1].dock

    mission = await post_mission(
        http,
        waypoints=[
            {"x": dock_x + 0.5, "y": dock_y + 1.5},
            {"x": dock_x + 1.5, "y": dock_y + 2.0, "tolerance": 0.3},
        ],
    )
    mission_id = mission["mission_id"]
    await events.wait_for("mission_completed", wait_s=30, mission_id=mission_id)
    stop.set()
    await asyncio.gather(*sims)

    done = await get_mission(http, mission_id)
    assert done["status"] == "completed"
    assert done["robot_id"] == fleet[1].robot_id
    assert done["metrics"]["waypoints_reached"] == 2
    assert done["metrics"]["distance_m"] > 1.5
    assert done["metrics"]["duration_s"] > 0
    assert done["failure_reason"] is None
    path = [t["to_status"] for t in done["transitions"]]
    assert path == ["pending", "assigned", "active", "completed"]
    published = events.types(mission_id=mission_id)
    assert published.count("waypoint_reached") == 2
    assert published.index("mission_started") < published.index("mission_completed")


async def test_mission_waits_until_robot_is_free(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """Without an eligible robot the mission stays pending until one is idle."""
    robot = RecordingRobot()
    feed = StateFeed(x=3, y=4, status=RobotStatus.MOVING)
    client = await connect(server, "r1", robot, feed)

    mission = await post_mission(http, waypoints=[{"x": 0, "y": 0}])
    await report(client, feed, status=RobotStatus.IDLE)
    await events.wait_for("mission_assigned", mission_id=mission["mission_id"])
    command = await robot.next_command()
    await client.close()

    assert mission["status"] == "pending"
    assert mission["robot_id"] is None
    assert command["type"] == "go_to"
    assert command["params"] == {"x": 0.0, "y": 0.0}
    assert command["mission_id"] == mission["mission_id"]
    assigned = await get_mission(http, mission["mission_id"])
    assert assigned["robot_id"] == "r1"


async def test_mission_times_out_and_robot_stops(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """A mission still running after its timeout is timed out and the robot stopped."""
    robot = RecordingRobot()
    client = await connect(server, "r1", robot, StateFeed())
    mission = await post_mission(http, waypoints=[{"x": 9, "y": 9}], timeout_s=30)
    await robot.next_command()

    await services_of(server).lifecycle.run_sweeps(later(20))
    still_running = await get_mission(http, mission["mission_id"])
    await services_of(server).lifecycle.run_sweeps(later(31))
    await events.wait_for("mission_timed_out", mission_id=mission["mission_id"])
    stop = await robot.next_command()
    await client.close()

    assert still_running["status"] == "active"
    assert stop["type"] == "stop"
    timed_out = await get_mission(http, mission["mission_id"])
    assert timed_out["status"] == "timed_out"
    assert timed_out["failure_reason"] == "timeout"
    assert timed_out["finished_at"] is not None


async def test_pending_mission_times_out_at_deadline(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """A pending mission times out once its deadline passes."""
    deadline = later(60).isoformat()
    mission = await post_mission(http, waypoints=[{"x": 1, "y": 1}], deadline=deadline)

    await services_of(server).lifecycle.run_sweeps(later(61))

    timed_out = await get_mission(http, mission["mission_id"])
    assert timed_out["status"] == "timed_out"
    assert timed_out["failure_reason"] == "deadline"


async def test_robot_resumes_mission_after_reconnect(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """A robot that reconnects within the timeout continues from its waypoint."""
    robot = RecordingRobot()
    feed = StateFeed()
    client = await connect(server, "r1", robot, feed)
    waypoints = [{"x": 1, "y": 0}, {"x": 2, "y": 0}, {"x": 3, "y": 0}]
    mission = await post_mission(http, waypoints=waypoints, timeout_s=60)
    mission_id = mission["mission_id"]
    assert (await robot.next_command())["params"]["x"] == 1
    await report(client, feed, x=1.0, status=RobotStatus.MOVING)
    await events.wait_for("waypoint_reached", mission_id=mission_id, index=0)
    assert (await robot.next_command())["params"]["x"] == 2
    await client.close()
    await events.wait_for("robot_disconnected", robot_id="r1")

    await services_of(server).lifecycle.run_sweeps(later(30))
    while_away = await get_mission(http, mission_id)
    resumed = RecordingRobot()
    client = await connect(server, "r1", resumed)
    assert (await resumed.next_command())["params"]["x"] == 2
    await report(client, feed, x=2.0)
    assert (await resumed.next_command())["params"]["x"] == 3
    await report(client, feed, x=3.0)
    await events.wait_for("mission_completed", mission_id=mission_id)
    await client.close()

    assert while_away["status"] == "active"
    assert while_away["metrics"]["waypoints_reached"] == 1
    done = await get_mission(http, mission_id)
    assert done["status"] == "completed"
    assert done["metrics"]["waypoints_reached"] == 3
    assert done["metrics"]["distance_m"] == pytest.approx(3.0)


async def test_waypoint_task_runs_before_next_leg(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """A task at a waypoint is sent on arrival and must succeed before moving on."""
    robot = RecordingRobot()
    feed = StateFeed()
    client = await connect(server, "r1", robot, feed)
    task = {"type": "scan_shelf", "params": {"shelf": "A3"}}
    waypoints = [{"x": 1, "y": 0, "task": task}, {"x": 2, "y": 0}]
    mission = await post_mission(http, waypoints=waypoints)

    first = await robot.next_command()
    await report(client, feed, x=1.0)
    task_command = await robot.next_command()
    second = await robot.next_command()
    await report(client, feed, x=2.0)
    await events.wait_for("mission_completed", mission_id=mission["mission_id"])
    await client.close()

    assert [first["type"], task_command["type"], second["type"]] == [
        "go_to",
        "scan_shelf",
        "go_to",
    ]
    assert task_command["params"] == {"shelf": "A3"}


async def test_rejected_step_fails_mission(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """A robot rejecting the mission's command fails the mission with that reason."""
    robot = RecordingRobot(outcome=("rejected", "Path blocked."))
    client = await connect(server, "r1", robot, StateFeed())
    mission = await post_mission(http, waypoints=[{"x": 4, "y": 4}])

    await events.wait_for("mission_failed", mission_id=mission["mission_id"])
    await client.close()

    failed = await get_mission(http, mission["mission_id"])
    assert failed["status"] == "failed"
    assert failed["failure_reason"] == "command_rejected"
    assert "Path blocked." in failed["message"]


async def test_robot_error_fails_mission(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """A robot reporting an error state fails its running mission."""
    robot = RecordingRobot()
    feed = StateFeed()
    client = await connect(server, "r1", robot, feed)
    mission = await post_mission(http, waypoints=[{"x": 4, "y": 4}])
    await robot.next_command()

    await report(client, feed, status=RobotStatus.ERROR)
    await events.wait_for("mission_failed", mission_id=mission["mission_id"])
    await client.close()

    failed = await get_mission(http, mission["mission_id"])
    assert failed["failure_reason"] == "robot_error"


async def test_cancel_mission_stops_robot(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """Cancelling a running mission stops the robot; a second cancel conflicts."""
    robot = RecordingRobot()
    client = await connect(server, "r1", robot, StateFeed())
    mission = await post_mission(http, waypoints=[{"x": 4, "y": 4}])
    await robot.next_command()

    cancelled = await http.post(f"/api/missions/{mission['mission_id']}/cancel")
    stop = await robot.next_command()
    again = await http.post(f"/api/missions/{mission['mission_id']}/cancel")
    await client.close()

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert stop["type"] == "stop"
    assert again.status_code == 409
    assert again.json()["error"] == "mission_already_finished"
    assert "mission_cancelled" in events.types(mission_id=mission["mission_id"])


async def test_running_mission_survives_server_restart(tmp_path) -> None:
    """A server restarted mid-mission resumes tracking it from the database."""
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/fleethub.db")
    feed = StateFeed()
    waypoints = [{"x": 1, "y": 0}, {"x": 2, "y": 0}]
    async with running_server(settings, migrate_schema=True) as server:
        robot = RecordingRobot()
        client = await connect(server, "r1", robot, feed)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            mission = await post_mission(http, waypoints=waypoints)
        await robot.next_command()
        await client.close()

    async with running_server(settings) as server:
        watch = EventWatch(services_of(server))
        robot = RecordingRobot()
        client = await connect(server, "r1", robot)
        resent = await robot.next_command()
        await report(client, feed, x=1.0)
        await report(client, feed, x=2.0)
        await watch.wait_for("mission_completed", mission_id=mission["mission_id"])
        await client.close()
        watch.close()

    assert resent["type"] == "go_to"
    assert resent["params"]["x"] == 1.0
