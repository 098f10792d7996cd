"""``fleethub demo``: a server, a real robot log and a few simulated robots."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fleethub.cli.server import RunningServer, running_server
from fleethub.client.robot import RobotClient
from fleethub.missions.store import OPEN_MISSION_STATUSES, MissionStatus
from fleethub.replay.carmen import intel_lab_log
from fleethub.replay.runner import ReplayResult, replay
from fleethub.security.principals import CLI, Role
from fleethub.settings import Settings
from fleethub.sim.robots import SimConfig, make_robot, run_robot

REPLAYED_ROBOT = "intel-lab"
# The replay sends about 1,000 states per second at --speed 200, far above the
# default per-robot rate limit, which suits real robots rather than replays.
DEMO_ROBOT_RATE_LIMIT = "5000/second"
# Simulated batteries drain this many times faster than real ones, so that a
# demo of a few minutes still shows robots going to charge.
DEMO_BATTERY_TIME_SCALE = 20.0
# Missions created per simulated robot, and how long the demo waits after the
# replay for them to finish.
DEMO_MISSIONS_PER_ROBOT = 2
DEMO_MISSION_TIMEOUT_S = 60.0
MISSION_WAIT_S = 90.0
# A simulated robot drains about 1.25 % per metre at the demo's battery time
# scale. This reserve lets a robot finish a demo mission before it has to leave
# for its dock. FLEETHUB_MISSION_BATTERY_RESERVE_PERCENT overrides it.
DEMO_MISSION_RESERVE_PERCENT = 45.0


async def run_demo(
    settings: Settings,
    *,
    console: Console,
    progress: Progress,
    speed: float,
    robots: int,
    exit_after_replay: bool,
    summary_json: Path | None,
    fresh_database: bool,
) -> dict[str, Any]:
    """Run the demo; return the summary once the replay is done."""
    with contextlib.ExitStack() as stack:
        if fresh_database and "FLEETHUB_DATABASE_URL" not in os.environ:
            folder = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="fleethub-demo-")
            )
            settings = settings.model_copy(
                update={"database_url": f"sqlite+aiosqlite:///{folder}/fleethub.db"}
            )
        if "FLEETHUB_MISSION_BATTERY_RESERVE_PERCENT" not in os.environ:
            settings = settings.model_copy(
                update={"mission_battery_reserve_percent": DEMO_MISSION_RESERVE_PERCENT}
            )
        settings = _demo_settings(settings)
        async with running_server(settings, migrate_schema=True) as server:
            credentials = await _issue_credentials(server, robots)
            _print_banner(console, server, settings, credentials.admin_key)
            summary = await _run_fleet(
                server, console, progress, speed, robots, exit_after_replay, credentials
            )
            _print_summary(console, summary)
            if summary_json is not None:
                text = json.dumps(summary, indent=2) + "\n"
                await asyncio.to_thread(summary_json.write_text, text)
            return summary
    raise AssertionError("unreachable")


def _demo_settings(settings: Settings) -> Settings:
    """Open the API docs and raise the robot rate limit, unless set explicitly."""
    update: dict[str, Any] = {"docs_public": True}
    if "FLEETHUB_RATE_LIMIT_ROBOT" not in os.environ:
        update["rate_limit_robot"] = DEMO_ROBOT_RATE_LIMIT
    return settings.model_copy(update=update)


@dataclass
class DemoCredentials:
    """The demo's admin key and its robots' credentials."""

    admin_key: str
    robot_tokens: dict[str, str]

    def robot_headers(self, robot_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.robot_tokens[robot_id]}"}

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}


async def _issue_credentials(server: RunningServer, robots: int) -> DemoCredentials:
    store = server.app.state.services.security.credentials
    _, admin_key = await store.create_api_key("demo admin", Role.ADMIN, CLI)
    robot_ids = [REPLAYED_ROBOT] + [f"sim-{index + 1:03d}" for index in range(robots)]
    tokens = {}
    for robot_id in robot_ids:
        _, token = await store.issue_robot_credential(robot_id, CLI, replace=True)
        tokens[robot_id] = token
    return DemoCredentials(admin_key, tokens)


def _print_banner(
    console: Console, server: RunningServer, settings: Settings, admin_key: str
) -> None:
    console.print(f"[bold green]fleethub[/] is serving on {server.http_url}")
    console.print(f"  Admin key:   {admin_key}")
    console.print("               (send it as 'Authorization: Bearer <key>')")
    console.print(f"  API docs:    {server.http_url}/docs")
    console.print(f"  Robots:      {server.http_url}/api/robots")
    console.print(f"  Robot link:  {server.ws_url}/ws/robots/<robot_id>")
    console.print(f"  Database:    {settings.database_url}")


async def _run_fleet(
    server: RunningServer,
    console: Console,
    progress: Progress,
    speed: float,
    robots: int,
    exit_after_replay: bool,
    credentials: DemoCredentials,
) -> dict[str, Any]:
    stop = asyncio.Event()
    # The robots wait at their docks for missions instead of wandering.
    config = SimConfig(time_scale=DEMO_BATTERY_TIME_SCALE, wander=False)
    fleet = [make_robot(i, config) for i in range(robots)]
    sims = [
        asyncio.create_task(
            run_robot(
                robot, server.ws_url, stop, credentials.robot_headers(robot.robot_id)
            )
        )
        for robot in fleet
    ]
    missions_created = await _create_missions(
        server, config, robots, credentials.admin_headers()
    )
    with progress:
        task = progress.add_task(f"replaying {REPLAYED_ROBOT}", total=None)
        result = await replay(
            intel_lab_log(),
            server.ws_url,
            REPLAYED_ROBOT,
            speed=speed,
            on_progress=lambda done, total: progress.update(
                task, completed=done, total=total
            ),
            headers=credentials.robot_headers(REPLAYED_ROBOT),
        )
    if not exit_after_replay:
        console.print("Replay done; simulated robots keep running. Ctrl-C stops.")
        await asyncio.Event().wait()
    await _wait_for_missions(server, MISSION_WAIT_S, credentials.admin_headers())
    stop.set()
    clients = await asyncio.gather(*sims)
    summary = await _summary(server, result, clients, credentials.admin_key)
    counts = await server.app.state.services.missions.store.mission_counts()
    summary["missions"] = {
        "created": missions_created,
        **{status.value: counts.get(status.value, 0) for status in MissionStatus},
    }
    return summary


def demo_missions(config: SimConfig, robots: int) -> list[dict[str, Any]]:
    """Return mission requests of two waypoints each, a few metres from the docks."""
    corner = -config.site_size_m / 2
    missions = []
    for index in range(robots * DEMO_MISSIONS_PER_ROBOT):
        x = corner + 1.5 * index
        y = corner + 2.0 + (index % 2)
        waypoints = [{"x": x, "y": y}, {"x": x + 1.5, "y": y + 1.0}]
        missions.append({"waypoints": waypoints, "timeout_s": DEMO_MISSION_TIMEOUT_S})
    return missions


async def _create_missions(
    server: RunningServer, config: SimConfig, robots: int, headers: dict[str, str]
) -> int:
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers) as http:
        for request in demo_missions(config, robots):
            response = await http.post("/api/missions", json=request)
            response.raise_for_status()
    return robots * DEMO_MISSIONS_PER_ROBOT


async def _wait_for_missions(
    server: RunningServer, timeout_s: float, headers: dict[str, str]
) -> None:
    """Poll until no mission is open, or ``timeout_s`` passes (they then time out)."""
    open_statuses = [("status", status.value) for status in OPEN_MISSION_STATUSES]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers) as http:
        while loop.time() < deadline:
            response = await http.get("/api/missions", params=open_statuses)
            if not response.json()["items"]:
                return
            await asyncio.sleep(0.25)


async def _summary(
    server: RunningServer,
    result: ReplayResult,
    clients: list[RobotClient],
    admin_key: str,
) -> dict[str, Any]:
    services = server.app.state.services
    await services.telemetry_writer.wait_idle(30)
    await services.event_writer.wait_idle(30)
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers) as http:
        robots = (await http.get("/api/robots")).json()
        analytics = (await http.get(f"/api/robots/{REPLAYED_ROBOT}/analytics")).json()
    sent = result.stats.sent + sum(client.stats.sent for client in clients)
    acked = result.stats.acked + sum(client.stats.acked for client in clients)
    return {
        "robots": len(robots),
        "states_sent": sent,
        "states_acked": acked,
        "states_rejected": _merge_counts(
            [result.stats.rejected, *(client.stats.rejected for client in clients)]
        ),
        "telemetry_rows": await services.storage.count_telemetry(),
        "events": await services.storage.event_counts(),
        "replayed_robot": {
            "robot_id": REPLAYED_ROBOT,
            "distance_m": round(analytics["distance_m"], 3),
            "avg_linear_velocity_mps": round(
                analytics["avg_linear_velocity_mps"] or 0.0, 4
            ),
            "operating_hours": round(analytics["operating_hours"], 4),
            "samples": analytics["samples"],
            "replay_seconds": round(result.wall_seconds, 2),
        },
    }


def _merge_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for entry in counts:
        for key, value in entry.items():
            merged[key] = merged.get(key, 0) + value
    return merged


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="fleethub demo summary", show_header=False)
    for key in ("robots", "states_sent", "states_acked", "telemetry_rows"):
        table.add_row(key, str(summary[key]))
    for event_type, count in sorted(summary["events"].items()):
        table.add_row(f"events.{event_type}", str(count))
    for key, value in summary["replayed_robot"].items():
        table.add_row(f"{REPLAYED_ROBOT}.{key}", str(value))
    for key, value in summary.get("missions", {}).items():
        table.add_row(f"missions.{key}", str(value))
    console.print(table)
