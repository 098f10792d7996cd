"""Operator-side scenarios: fan-out to ``/ws/fleet`` and commands under load.

Both run fleethub only: the baseline servers have neither an operator
stream nor a command API.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from fleethub.bench.config import BenchConfig, Reporter
from fleethub.bench.databases import fresh_database
from fleethub.bench.ingest import LOAD_TIMEOUT_S, _latency_fields
from fleethub.bench.load import LoadPlan, LoadResult, load_main, robot_id
from fleethub.bench.processes import ChildProcess
from fleethub.bench.servers import ProcessMonitor, RunningProcess, start_server
from fleethub.bench.stats import summarize
from fleethub.bench.subscribers import SubscriberPlan, SubscriberResult, subscriber_main

# How often the command scenario polls the events API for the robot's answer.
EVENT_POLL_S = 0.01
EVENT_TIMEOUT_S = 5.0


def run_fanout(config: BenchConfig, reporter: Reporter) -> list[dict[str, Any]]:
    """Stream states to S subscribers of ``/ws/fleet`` while robots send them."""
    rows = []
    for subscribers, rate, batch_ms in config.fanout_cases:
        batching = f", batches every {batch_ms} ms" if batch_ms else ""
        reporter.status(
            f"fan-out: {subscribers} subscribers at {rate:g} states/s{batching}"
        )
        rows.append(_fanout_one(config, subscribers, rate, batch_ms, reporter))
        if not rows[-1]["available"]:
            break

    return rows


def _fanout_one(
    config: BenchConfig,
    subscribers: int,
    rate: float,
    batch_ms: int,
    reporter: Reporter,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scenario": "fanout",
        "server": "fleethub",
        "backend": "sqlite",
        "subscribers": subscribers,
        "target_rate": rate,
        "batch_ms": batch_ms,
    }
    with fresh_database("sqlite", config.work_dir, config.postgres_url) as url:
        with start_server(
            config.server_spec("fleethub", url), config.work_dir
        ) as server:
            watched = ChildProcess(
                subscriber_main,
                SubscriberPlan(server.ws_url, subscribers, batch_ms=batch_ms),
            ).start()
            # The subscriber process shares the machine's cores with the server
            # and the load, so its CPU time is reported next to theirs.
            subscriber_monitor = ProcessMonitor(watched.process.pid)
            subscriber_monitor.start()
            try:
                received, load = _drive_subscribers(
                    config, server, watched, rate, reporter
                )
                cpu = _step_cpu(load, server.monitor, subscriber_monitor)
            finally:
                subscriber_monitor.stop()
                watched.terminate()
    row["available"] = received.available
    if not received.available:
        row["detail"] = f"not available: {received.detail}"
        return row
    sent = load.sent if load else 0
    step = load.steps[0] if load and load.steps else None
    return {
        **row,
        "connected": received.connected,
        "sent": sent,
        "received": received.received,
        "delivered_fraction": (
            received.received / (sent * received.connected) if sent else None
        ),
        "p50_ms": received.latency.p50_ms,
        "p99_ms": received.latency.p99_ms,
        "max_ms": received.latency.max_ms,
        "ack_p99_ms": step.latency.p99_ms if step else None,
        **cpu,
    }


def _step_cpu(
    load: LoadResult | None, server: ProcessMonitor, subscribers: ProcessMonitor
) -> dict[str, Any]:
    """CPU use of the server, the subscribers and the load during the load step."""
    step = load.steps[0] if load and load.steps else None
    if step is None or step.duration_s <= 0:
        return {}
    server.sample()
    subscribers.sample()
    server_s = server.cpu_between(step.started_at, step.ended_at)
    subscriber_s = subscribers.cpu_between(step.started_at, step.ended_at)

    def pct(seconds: float | None) -> float | None:
        return 100.0 * seconds / step.duration_s if seconds is not None else None

    return {
        "server_cpu_pct": pct(server_s),
        "server_cpu_us_per_state": (
            server_s / step.sent * 1e6 if server_s is not None and step.sent else None
        ),
        "subscriber_cpu_pct": pct(subscriber_s),
        "load_cpu_pct": pct(step.load_cpu_s),
    }


def _drive_subscribers(
    config: BenchConfig,
    server: RunningProcess,
    watched: ChildProcess,
    rate: float,
    reporter: Reporter,
) -> tuple[SubscriberResult, LoadResult | None]:
    kind, payload = watched.wait_for({"subscribed"}, reporter.event, LOAD_TIMEOUT_S)
    if kind == "done":
        return payload, None
    robots = min(config.robots, max(1, int(rate)))
    plan = LoadPlan(server.ws_url, robots, config.step_s * 2, rates=[rate])
    load = ChildProcess(load_main, plan).start()
    try:
        result = load.result(reporter.event, LOAD_TIMEOUT_S)
    finally:
        load.terminate()
    watched.stop.set()
    return watched.result(reporter.event, LOAD_TIMEOUT_S), result


def run_commands(config: BenchConfig, reporter: Reporter) -> list[dict[str, Any]]:
    """Time REST command -> robot receipt -> response visible in the events API."""
    reporter.status(
        f"commands: {config.command_count} under {config.command_load_rate:g} msg/s"
    )
    with fresh_database("sqlite", config.work_dir, config.postgres_url) as url:
        with start_server(
            config.server_spec("fleethub", url), config.work_dir
        ) as server:
            plan = LoadPlan(
                server.ws_url,
                config.robots,
                config.command_step_s,
                rates=[config.command_load_rate],
                answer_commands=True,
            )
            load = ChildProcess(load_main, plan).start()
            try:
                posted, load_result = _post_commands(config, server, load, reporter)
            finally:
                load.terminate()
    return [_command_row(config, posted, load_result)]


def _post_commands(
    config: BenchConfig, server: RunningProcess, load: ChildProcess, reporter: Reporter
) -> tuple[list[dict[str, Any]], LoadResult]:
    kind, payload = load.wait_for({"step_started"}, reporter.event, LOAD_TIMEOUT_S)
    if kind == "done":
        return [], payload
    deadline = float(payload["at"]) + config.command_step_s - 1.0
    posted: list[dict[str, Any]] = []
    target = robot_id(1)
    with httpx.Client(base_url=server.http_url, timeout=30.0) as client:
        while len(posted) < config.command_count and time.time() < deadline:
            posted.append(_post_one(client, target))

    return posted, load.result(reporter.event, LOAD_TIMEOUT_S)


def _post_one(client: httpx.Client, target: str) -> dict[str, Any]:
    started = time.time()
    response = client.post(
        f"/api/robots/{target}/commands", json={"type": "bench_ping"}
    )
    replied = time.time()
    command_id = response.json().get("command_id") if response.is_success else None
    reported = _wait_reported(client, command_id) if command_id else None
    return {
        "status": response.status_code,
        "command_id": command_id,
        "started": started,
        "rest_s": replied - started,
        "reported_s": reported - started if reported else None,
    }


def _wait_reported(client: httpx.Client, command_id: str) -> float | None:
    """Poll the command until the API reports the robot's answer; return the time."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while time.monotonic() < deadline:
        response = client.get(f"/api/commands/{command_id}")
        if response.is_success and response.json().get("status") == "succeeded":
            return time.time()
        time.sleep(EVENT_POLL_S)
    return None


def _command_row(
    config: BenchConfig, posted: list[dict[str, Any]], load: LoadResult
) -> dict[str, Any]:
    receipts = load.command_receipts
    to_robot = [
        receipts[p["command_id"]] - p["started"]
        for p in posted
        if p["command_id"] in receipts
    ]
    reported = [p["reported_s"] for p in posted if p["reported_s"] is not None]
    step = load.steps[0] if load.steps else None
    return {
        "scenario": "commands",
        "server": "fleethub",
        "backend": "sqlite",
        "load_rate": config.command_load_rate,
        "load_sustained": bool(step and step.sustained),
        "commands": len(posted),
        "accepted": sum(1 for p in posted if p["status"] == 202),
        "received_by_robot": len(to_robot),
        "reported_by_api": len(reported),
        "rest": summarize([p["rest_s"] for p in posted]),
        "to_robot": summarize(to_robot),
        "to_api_report": summarize(reported),
        **{f"ingest_{k}": v for k, v in _latency_fields(step).items()},
    }
