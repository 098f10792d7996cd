"""Prometheus metrics under a small replay."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx

from fleethub.cli.server import RunningServer, running_server
from fleethub.models import utcnow
from fleethub.replay.carmen import intel_lab_log, read_samples
from fleethub.replay.runner import sample_to_state

from .conftest import (
    sample,
    scrape,
    send_raw_frames,
    send_states,
    sqlite_settings,
    wait_for,
)

REPLAYED = 200


def replay_states(count: int) -> list:
    samples = list(itertools.islice(read_samples(intel_lab_log()), count))
    anchor = utcnow().timestamp() - samples[-1].log_time - 1.0
    return [sample_to_state(item, anchor) for item in samples]


async def test_replay_moves_ingest_metrics(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """A replay of 200 states and 3 bad frames shows up in the ingest counters."""
    before = await scrape(http)
    assert sample(before, "fleethub_states_accepted_total") == 0

    await send_states(server, "intel-lab", replay_states(REPLAYED))
    errors = await send_raw_frames(server, "intel-lab", ["{", "[]", '{"type": "nope"}'])
    assert len(errors) == 3
    services = server.app.state.services
    await services.event_writer.wait_idle(5)

    after = await scrape(http)
    assert sample(after, "fleethub_states_accepted_total") == REPLAYED
    assert sample(after, "fleethub_states_received_total") == REPLAYED + 3
    rejected = {
        dict(labels)["reason"]: value
        for (name, labels), value in after.items()
        if name == "fleethub_states_rejected_total"
    }
    assert sum(rejected.values()) == 3
    assert (
        sample(after, "fleethub_writer_batch_size_sum", writer="telemetry") == REPLAYED
    )
    assert (
        sample(after, "fleethub_writer_items_written_total", writer="telemetry")
        == REPLAYED
    )
    assert sample(after, "fleethub_writer_flush_seconds_count", writer="telemetry") >= 1
    assert sample(after, "fleethub_ingest_queue_depth") == 0
    assert sample(after, "fleethub_ack_lag_seconds") == 0
    assert sample(after, "fleethub_ack_lag_last_batch_seconds") > 0
    assert sample(after, "fleethub_events_total", type="robot_connected") == 2
    assert sample(after, "fleethub_events_total", type="robot_disconnected") == 2
    assert sample(after, "fleethub_rate_limit_storage_failures_total") == 0


async def test_connected_robots_follow_links(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """The connected-robots gauge counts open links and drops when they close."""
    import websockets

    url = f"{server.ws_url}/ws/robots/gauge-bot"
    async with websockets.connect(url) as socket:
        await socket.recv()
        assert sample(await scrape(http), "fleethub_connected_robots") == 1
        assert (
            sample(
                await scrape(http),
                "fleethub_websocket_active",
                route="/ws/robots/{robot_id:path}",
            )
            == 1
        )

    async def gone() -> bool:
        return sample(await scrape(http), "fleethub_connected_robots") == 0

    await wait_for(gone)
    samples = await scrape(http)
    route = "/ws/robots/{robot_id:path}"
    assert sample(samples, "fleethub_websocket_connections_total", route=route) == 1
    assert (
        sample(samples, "fleethub_websocket_duration_seconds_count", route=route) == 1
    )


async def test_http_metrics_use_route_template(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """HTTP requests are counted under the route template, not the raw path."""
    await http.get("/api/robots/robot-a/state")
    await http.get("/api/robots/robot-b/state")
    await http.get("/no/such/path")

    samples = await scrape(http)
    route = "/api/robots/{robot_id}/state"
    assert (
        sample(
            samples,
            "fleethub_http_requests_total",
            method="GET",
            route=route,
            status="404",
        )
        == 2
    )
    assert (
        sample(
            samples,
            "fleethub_http_request_duration_seconds_count",
            method="GET",
            route=route,
        )
        == 2
    )
    assert (
        sample(
            samples,
            "fleethub_http_requests_total",
            method="GET",
            route="unmatched",
            status="404",
        )
        == 1
    )
    raw_paths = [
        labels
        for (name, labels) in samples
        if ("route", "/api/robots/robot-a/state") in labels
    ]
    assert raw_paths == []


async def test_feature_metrics_exposed(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Counters other features fill appear on the page once incremented."""
    metrics = server.app.state.services.metrics
    metrics.commands_total.labels(state="sent").inc()
    metrics.missions_total.labels(state="running").inc()
    metrics.webhook_deliveries_total.labels(outcome="failure").inc()
    metrics.webhook_failures_total.labels(reason="timeout").inc()
    metrics.scheduler_runs_total.labels(kind="retention", outcome="success").inc()

    samples = await scrape(http)
    assert sample(samples, "fleethub_commands_total", state="sent") == 1
    assert sample(samples, "fleethub_missions_total", state="running") == 1
    assert sample(samples, "fleethub_webhook_deliveries_total", outcome="failure") == 1
    assert sample(samples, "fleethub_webhook_failures_total", reason="timeout") == 1
    assert (
        sample(
            samples,
            "fleethub_scheduler_runs_total",
            kind="retention",
            outcome="success",
        )
        == 1
    )
    subscriptions = len(server.app.state.services.bus.subscriptions())
    assert sample(samples, "fleethub_bus_subscribers") == subscriptions
    assert sample(samples, "fleethub_bus_subscriber_drops_total") == 0


async def test_two_servers_keep_separate_registries(tmp_path: Path) -> None:
    """Two servers in one process report their own counts."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    settings_a = sqlite_settings(tmp_path / "a")
    settings_b = sqlite_settings(tmp_path / "b")
    async with (
        running_server(settings_a, migrate_schema=True) as server_a,
        running_server(settings_b, migrate_schema=True) as server_b,
    ):
        await send_states(server_a, "only-a", replay_states(20))
        async with httpx.AsyncClient(base_url=server_a.http_url) as client_a:
            assert (
                sample(await scrape(client_a), "fleethub_states_accepted_total") == 20
            )
        async with httpx.AsyncClient(base_url=server_b.http_url) as client_b:
            assert sample(await scrape(client_b), "fleethub_states_accepted_total") == 0


async def test_subscriber_drops_survive_unsubscribe(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Drops of a slow subscriber stay counted after it unsubscribes."""
    bus = server.app.state.services.bus
    before = len(bus.subscriptions())
    subscription = bus.subscribe(frozenset({"test"}), maxsize=1)
    for index in range(3):
        await bus.publish("test", f"message-{index}".encode())
    during = await scrape(http)
    bus.unsubscribe(subscription)
    after = await scrape(http)

    assert sample(during, "fleethub_bus_subscribers") == before + 1
    assert sample(during, "fleethub_bus_subscriber_drops_total") == 2
    assert sample(after, "fleethub_bus_subscribers") == before
    assert sample(after, "fleethub_bus_subscriber_drops_total") == 2


async def test_command_states_counted(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Each command transition moves the commands counter for the state entered."""
    await server.app.state.services.storage.ensure_robot("parked", utcnow())
    response = await http.post("/api/robots/parked/commands", json={"type": "stop"})
    await http.post(f"/api/commands/{response.json()['command_id']}/cancel")
    samples = await scrape(http)

    assert sample(samples, "fleethub_commands_total", state="queued") == 1
    assert sample(samples, "fleethub_commands_total", state="cancelled") == 1
    assert sample(samples, "fleethub_commands_total", state="sent") is None
