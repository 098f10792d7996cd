"""Tests for rules, alerts and their actions on a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from fleethub.cli.server import RunningServer, running_server
from fleethub.client.robot import RobotClient
from fleethub.testing import ManualClock, StateFactory, server_settings, wait_until


async def alerts(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await http.get("/api/alerts", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def event_types(http: httpx.AsyncClient, expected: str) -> list[str] | None:
    """Return the stored event types once ``expected`` is among them."""
    response = await http.get("/api/events", params={"robot_id": "r1"})
    types = [event["type"] for event in response.json()["items"]]
    return types if expected in types else None


def use_manual_clock(server: RunningServer) -> ManualClock:
    clock = ManualClock()
    server.app.state.services.rules.engine.clock = clock
    return clock


async def test_battery_low_sends_charge(tmp_path: Path, database_url: str) -> None:
    """A low battery opens one alert and sends the robot a charge command."""
    commands: list[dict[str, Any]] = []

    async def on_command(data: dict[str, Any]) -> tuple[str, str | None]:
        commands.append(data)
        return "succeeded", None

    state = StateFactory()
    settings = server_settings(tmp_path, database_url=database_url)
    async with (
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
        RobotClient(server.ws_url, "r1", on_command=on_command) as robot,
    ):
        for battery in (50.0, 15.0, 14.0, 13.0):
            await robot.send_state(state(battery=battery))
        await wait_until(lambda: commands)
        [alert] = await wait_until(lambda: alerts(http, status="open"))

    assert [command["type"] for command in commands] == ["charge"]
    assert alert["rule_id"] == "battery_low"
    assert alert["robot_id"] == "r1"
    assert alert["severity"] == "warning"
    assert alert["data"]["value"] == 15.0


async def test_alert_acknowledged_then_cleared(
    tmp_path: Path, database_url: str
) -> None:
    """An acknowledged alert raises no new alert and clears past hysteresis."""
    state = StateFactory()
    async with (
        running_server(
            server_settings(tmp_path, database_url=database_url), migrate_schema=True
        ) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
        RobotClient(server.ws_url, "r1") as robot,
    ):
        await robot.send_state(state(battery=10.0))
        [alert] = await wait_until(lambda: alerts(http, status="open"))
        acked = await http.post(
            f"/api/alerts/{alert['alert_id']}/ack", json={"by": "ops"}
        )
        for battery in (9.0, 22.0, 11.0):
            await robot.send_state(state(battery=battery))
        await robot.send_state(state(battery=30.0))
        [cleared] = await wait_until(lambda: alerts(http, status="cleared"))
        everything = await alerts(http)
        again = await http.post(f"/api/alerts/{alert['alert_id']}/ack")
        missing = await http.post("/api/alerts/nope/ack")

    assert acked.status_code == 200
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "ops"
    assert cleared["alert_id"] == alert["alert_id"]
    assert len(everything) == 1
    assert again.status_code == 409
    assert again.json()["error"] == "alert_not_open"
    assert missing.status_code == 404


async def test_sustained_rule_on_server(tmp_path: Path) -> None:
    """A sustained rule skips a short dip and fires from the periodic tick."""
    state = StateFactory()
    settings = server_settings(tmp_path, rules_tick_interval_s=0.02)
    rule = {
        "id": "battery_low",
        "field": "battery",
        "comparison": "lt",
        "threshold": 20.0,
        "clear_threshold": 25.0,
        "sustained_for_s": 10.0,
    }
    async with (
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
        RobotClient(server.ws_url, "r1") as robot,
    ):
        clock = use_manual_clock(server)
        replaced = await http.put("/api/rules/battery_low", json=rule)
        await robot.send_state(state(battery=10.0))
        clock.advance(5.0)
        await robot.send_state(state(battery=50.0))
        await robot.send_state(state(battery=10.0))
        await robot.flush(5.0)
        clock.advance(9.0)
        rules = server.app.state.services.rules
        await rules.run_tick()
        await rules.wait_idle()
        after_dip = await alerts(http)
        clock.advance(2.0)
        [alert] = await wait_until(lambda: alerts(http, status="open"))

    assert replaced.status_code == 200
    assert after_dip == []
    assert alert["rule_id"] == "battery_low"
    assert alert["data"]["held_s"] >= 10.0


async def test_robot_offline_and_back(tmp_path: Path) -> None:
    """A silent robot goes offline after the timeout and online with a state."""
    state = StateFactory()
    settings = server_settings(tmp_path, rules_tick_interval_s=0.02, offline_after_s=30)
    async with (
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        clock = use_manual_clock(server)
        async with RobotClient(server.ws_url, "r1") as robot:
            await robot.send_state(state())
            await robot.flush(5.0)
        clock.advance(29.0)
        await server.app.state.services.rules.run_tick()
        before_timeout = await alerts(http, rule_id="robot_offline")
        clock.advance(2.0)
        [offline] = await wait_until(lambda: alerts(http, rule_id="robot_offline"))
        async with RobotClient(server.ws_url, "r1") as robot:
            await robot.send_state(state())
            await wait_until(lambda: alerts(http, status="cleared"))
        types = await wait_until(lambda: event_types(http, "robot_online"))

    assert before_timeout == []
    assert offline["severity"] == "critical"
    assert offline["status"] == "open"
    assert "robot_offline" in types
    assert "robot_online" in types


async def test_rules_crud_validates(tmp_path: Path, database_url: str) -> None:
    """Rules CRUD rejects bad rules with structured errors and persists edits."""
    settings = server_settings(tmp_path, database_url=database_url)
    good = {
        "id": "fast",
        "field": "linear_velocity",
        "comparison": "gt",
        "threshold": 2,
    }
    bad_hysteresis = {**good, "id": "bad", "clear_threshold": 3.0}
    async with (
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        created = await http.post("/api/rules", json=good)
        duplicate = await http.post("/api/rules", json=good)
        invalid = await http.post("/api/rules", json=bad_hysteresis)
        unknown_field = await http.post(
            "/api/rules", json={**good, "id": "x", "field": "y"}
        )
        mismatch = await http.put("/api/rules/other", json=good)
        deleted = await http.delete("/api/rules/obstacle_detected")
        missing = await http.delete("/api/rules/obstacle_detected")
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        ids = [rule["id"] for rule in (await http.get("/api/rules")).json()]

    assert created.status_code == 201
    assert created.json()["threshold"] == 2.0
    assert duplicate.status_code == 409
    assert duplicate.json()["error"] == "rule_exists"
    assert invalid.status_code == 422
    assert invalid.json()["error"] == "invalid_request"
    assert "clear_threshold" in invalid.text
    assert unknown_field.status_code == 422
    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "rule_id_mismatch"
    assert deleted.status_code == 204
    assert missing.status_code == 404
    assert "fast" in ids
    assert "obstacle_detected" not in ids
    assert "battery_low" in ids


async def test_mission_event_rule_opens_alert(tmp_path: Path) -> None:
    """A mission_failed event opens a critical alert through its event rule."""
    from fleethub.models import Event

    async with (
        running_server(server_settings(tmp_path), migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        pipeline = server.app.state.services.pipeline
        await pipeline.emit(
            Event(type="mission_failed", robot_id="r7", data={"id": "m1"})
        )
        [alert] = await wait_until(lambda: alerts(http, status="open"))

    assert alert["rule_id"] == "mission_failed"
    assert alert["event_type"] == "mission_failed_alert"
    assert alert["severity"] == "critical"
    assert alert["data"]["source_data"] == {"id": "m1"}
