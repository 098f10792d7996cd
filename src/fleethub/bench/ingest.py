"""Load scenarios: ingest ramp, connections held, fan-out and command round trip.

Every function returns result rows (plain dicts) for the report. A row
always names its ``scenario``, ``server`` and ``backend``.
"""

from __future__ import annotations

from typing import Any

from fleethub.bench.config import BenchConfig, Reporter
from fleethub.bench.databases import count_rows, fresh_database
from fleethub.bench.load import LoadPlan, LoadResult, load_main
from fleethub.bench.processes import ChildProcess
from fleethub.bench.servers import RunningProcess, start_server
from fleethub.bench.stats import StepResult

MIB = 1024 * 1024
LOAD_TIMEOUT_S = 900.0


def run_ingest(config: BenchConfig, reporter: Reporter) -> list[dict[str, Any]]:
    """Ramp each server on each backend to its highest sustained rate."""
    rows = []
    for backend in config.backends:
        for kind in config.server_kinds():
            redis = backend == "postgresql" and config.uses_redis(kind)
            reporter.status(f"ingest: {kind} on {backend}")
            rows.append(_ingest_one(config, kind, backend, redis, reporter))

    return rows


def _ingest_one(
    config: BenchConfig, kind: str, backend: str, redis: bool, reporter: Reporter
) -> dict[str, Any]:
    with fresh_database(backend, config.work_dir, config.postgres_url) as url:
        spec = config.server_spec(kind, url, redis=redis)
        with start_server(spec, config.work_dir) as server:
            plan = LoadPlan(
                ws_url=server.ws_url,
                robots=config.robots,
                step_s=config.step_s,
                start_rate=config.ramp_start(kind),
                max_rate=config.max_rate,
                refine=config.refine,
            )
            result = run_load(plan, reporter)
            steps = [_step_row(server, step) for step in result.steps]
            peak = server.monitor.peak_rss_bytes()
        stored = count_rows(url)
    best = _best_step(result.steps)
    return {
        "scenario": "ingest",
        "server": kind,
        "backend": backend + ("+redis" if redis else ""),
        "robots": config.robots,
        "step_s": config.step_s,
        "max_sustained_msg_s": best.ack_rate if best else None,
        "load_bound": bool(best and not best.sustained),
        "peak_ack_msg_s": max((step.ack_rate for step in result.steps), default=None),
        **_latency_fields(best),
        "server_cpu_pct": _best_step_field(steps, best, "server_cpu_pct"),
        "server_cpu_us_per_msg": _best_step_field(steps, best, "server_cpu_us_per_msg"),
        "peak_rss_mib": peak / MIB if peak else None,
        "sent": result.sent,
        "acked": result.acked,
        "stored_rows": stored,
        "all_acked_stored": stored is not None and stored >= result.acked,
        "limited_by": next((s.reason for s in result.steps if not s.sustained), ""),
        "errors": result.errors,
        "steps": steps,
    }


def run_load(plan: LoadPlan, reporter: Reporter) -> LoadResult:
    """Run a load process to the end and return its result."""
    child = ChildProcess(load_main, plan).start()
    try:
        return child.result(reporter.event, LOAD_TIMEOUT_S)
    finally:
        child.terminate()


def _best_step(steps: list[StepResult]) -> StepResult | None:
    """Return the step with the highest acknowledged rate the server kept up with."""
    kept_up = [step for step in steps if step.kept_up]
    return max(kept_up, key=lambda step: step.ack_rate, default=None)


def _latency_fields(step: StepResult | None) -> dict[str, Any]:
    latency = step.latency if step else None
    return {
        "p50_ms": latency.p50_ms if latency else None,
        "p99_ms": latency.p99_ms if latency else None,
        "max_ms": latency.max_ms if latency else None,
    }


def _step_row(server: RunningProcess, step: StepResult) -> dict[str, Any]:
    server.monitor.sample()
    cpu = server.monitor.cpu_between(step.started_at, step.ended_at)
    return {
        "target_rate": step.target_rate,
        "send_rate": step.send_rate,
        "ack_rate": step.ack_rate,
        "sustained": step.sustained,
        "kept_up": step.kept_up,
        "reason": step.reason,
        "p50_ms": step.latency.p50_ms,
        "p99_ms": step.latency.p99_ms,
        "max_ms": step.latency.max_ms,
        "server_cpu_s": cpu,
        "server_cpu_pct": 100.0 * cpu / step.duration_s if cpu is not None else None,
        "server_cpu_us_per_msg": _per_message_us(cpu, step.acked),
        "load_cpu_pct": 100.0 * step.load_cpu_s / step.duration_s,
        "errors": step.errors,
    }


def _per_message_us(cpu_s: float | None, messages: int) -> float | None:
    """Server CPU time per acknowledged message, microseconds.

    Less sensitive than throughput to other processes on a shared machine,
    because it counts only the CPU time the server actually got.
    """
    if cpu_s is None or messages == 0:
        return None
    return cpu_s / messages * 1e6


def _best_step_field(
    steps: list[dict[str, Any]], best: StepResult | None, key: str
) -> float | None:
    if best is None:
        return None
    return next((s[key] for s in steps if s["target_rate"] == best.target_rate), None)


def run_connections(config: BenchConfig, reporter: Reporter) -> list[dict[str, Any]]:
    """Hold many robot connections at 1 Hz and measure memory per connection."""
    rows = []
    for kind in config.server_kinds("connections"):
        reporter.status(f"connections: {config.connections} robots on {kind}")
        rows.append(_connections_one(config, kind, reporter))

    return rows


def _connections_one(
    config: BenchConfig, kind: str, reporter: Reporter
) -> dict[str, Any]:
    with fresh_database("sqlite", config.work_dir, config.postgres_url) as url:
        with start_server(config.server_spec(kind, url), config.work_dir) as server:
            idle = server.monitor.sample()
            plan = LoadPlan(
                ws_url=server.ws_url,
                robots=config.connections,
                step_s=config.connection_step_s,
                rates=[float(config.connections)],
            )
            result = run_load(plan, reporter)
            step = result.steps[0] if result.steps else None
            rss = _max_rss(server, step)
    grown = rss - idle.rss_bytes if rss is not None and idle is not None else None
    return {
        "scenario": "connections",
        "server": kind,
        "backend": "sqlite",
        "robots": config.connections,
        "connected": result.connected,
        "connect_s": result.connect_s,
        "sustained": bool(step and step.sustained),
        "reason": step.reason if step else "no step ran",
        **_latency_fields(step),
        "idle_rss_mib": idle.rss_bytes / MIB if idle else None,
        "rss_mib": rss / MIB if rss is not None else None,
        "kib_per_connection": (
            grown / 1024 / result.connected
            if grown is not None and result.connected
            else None
        ),
    }


def _max_rss(server: RunningProcess, step: StepResult | None) -> int | None:
    server.monitor.sample()
    if step is None:
        return None
    samples = server.monitor.between(step.started_at, step.ended_at + 1.0)
    return max((s.rss_bytes for s in samples), default=None)
