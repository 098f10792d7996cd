"""Run the selected scenarios in order and collect one result document."""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from fleethub.bench.analytics import run_analytics
from fleethub.bench.config import BenchConfig, Reporter, redis_live_state_available
from fleethub.bench.databases import postgres_available
from fleethub.bench.ingest import run_connections, run_ingest
from fleethub.bench.operators import run_commands, run_fanout
from fleethub.bench.report import add_ingest_ratios, machine

logger = logging.getLogger(__name__)

Scenario = Callable[[BenchConfig, Reporter], list[dict[str, Any]]]

RUNNERS: dict[str, Scenario] = {
    "ingest": run_ingest,
    "fanout": run_fanout,
    "connections": run_connections,
    "analytics": run_analytics,
    "commands": run_commands,
}

# Each robot connection costs one file descriptor in the load process and one
# in the server, which inherits this process's limit.
WANTED_OPEN_FILES = 16_384


def run_suite(config: BenchConfig, reporter: Reporter) -> dict[str, Any]:
    """Run every scenario of ``config``; return the rows, notes and machine."""
    _raise_open_file_limit()
    notes = _check_backends(config)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in config.scenarios:
        rows.extend(RUNNERS[name](config, reporter))

    rows = msgspec.to_builtins(rows)
    add_ingest_ratios(rows)
    return {
        "machine": machine(),
        "command": " ".join(sys.argv),
        "quick": config.quick,
        "duration_s": time.perf_counter() - started,
        "notes": notes,
        "rows": rows,
    }


def _check_backends(config: BenchConfig) -> list[str]:
    """Drop backends that are not reachable and say why."""
    notes = []
    if "postgresql" in config.backends and not postgres_available(config.postgres_url):
        config.backends = tuple(b for b in config.backends if b != "postgresql")
        notes.append("PostgreSQL is not reachable; its scenarios did not run.")
    if config.redis_url and not redis_live_state_available():
        notes.append(
            "This build keeps live state in memory only; the PostgreSQL runs of "
            "fleethub did not use Redis."
        )
    if config.baselines_dir is None or len(config.server_kinds()) == 1:
        notes.append("Baseline server scripts not found; no ratios were computed.")
    return notes


def _raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = (
        min(WANTED_OPEN_FILES, hard)
        if hard != resource.RLIM_INFINITY
        else WANTED_OPEN_FILES
    )
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        logger.info("bench_open_files_raised", extra={"from": soft, "to": wanted})
