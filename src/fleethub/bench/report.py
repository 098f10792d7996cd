"""Ratios against the baselines, the rich tables and the JSON file of a run."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

INGEST_GOALS = {"minimal": 0.5, "tutorial": 10.0}


def machine() -> dict[str, Any]:
    """Describe the machine a run measured: CPU model, cores, RAM, Python."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "ram_gib": round(memory / 2**30, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def add_ingest_ratios(rows: list[dict[str, Any]]) -> None:
    """Add fleethub's rate as a multiple of each baseline on the same backend."""
    by_key = {(r["server"], r["backend"]): r for r in rows if r["scenario"] == "ingest"}
    for (server, backend), row in by_key.items():
        if server != "fleethub":
            continue
        for baseline, goal in INGEST_GOALS.items():
            other = by_key.get((baseline, backend.replace("+redis", ""))) or by_key.get(
                (baseline, backend)
            )
            ratio = _ratio(row.get("max_sustained_msg_s"), other)
            row[f"vs_{baseline}"] = ratio
            row[f"cpu_per_msg_vs_{baseline}"] = _cpu_ratio(row, other)
            row[f"vs_{baseline}_goal"] = goal
            row[f"vs_{baseline}_met"] = ratio is not None and ratio >= goal


def _ratio(value: float | None, other: dict[str, Any] | None) -> float | None:
    if other is None or not value or not other.get("max_sustained_msg_s"):
        return None
    return value / other["max_sustained_msg_s"]


def _cpu_ratio(row: dict[str, Any], other: dict[str, Any] | None) -> float | None:
    """Return fleethub's CPU time per message as a multiple of the baseline's."""
    mine = row.get("server_cpu_us_per_msg")
    theirs = other.get("server_cpu_us_per_msg") if other else None
    return mine / theirs if mine and theirs else None


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(
    title: str, columns: list[tuple[str, str]], rows: list[dict[str, Any]]
) -> Table:
    table = Table(title=title, title_justify="left")
    for header, _ in columns:
        table.add_column(header, justify="right" if header[0].islower() else "left")
    for row in rows:
        table.add_row(*(_fmt(_lookup(row, key)) for _, key in columns))
    return table


def _lookup(row: dict[str, Any], key: str) -> Any:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


TABLES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "ingest": (
        "Ingest: highest sustained rate (ack >= 98 %, p99 < 1 s)",
        [("Server", "server"), ("Backend", "backend"), ("msg/s", "max_sustained_msg_s"),
         ("peak ack/s", "peak_ack_msg_s"),
         ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("max ms", "max_ms"),
         ("cpu %", "server_cpu_pct"), ("cpu us/msg", "server_cpu_us_per_msg"),
         ("peak MiB", "peak_rss_mib"),
         ("all stored", "all_acked_stored"), ("x minimal", "vs_minimal"),
         ("x tutorial", "vs_tutorial")],
    ),
    "fanout": (
        "Fan-out: state to /ws/fleet subscriber",
        [("subs", "subscribers"), ("states/s", "target_rate"),
         ("batch ms", "batch_ms"), ("delivered", "delivered_fraction"),
         ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("max ms", "max_ms"),
         ("ack p99 ms", "ack_p99_ms"), ("server cpu %", "server_cpu_pct"),
         ("server us/state", "server_cpu_us_per_state"),
         ("subs cpu %", "subscriber_cpu_pct"), ("load cpu %", "load_cpu_pct")],
    ),
    "connections": (
        "Connections at 1 Hz",
        [("Server", "server"), ("robots", "robots"), ("connected", "connected"),
         ("connect s", "connect_s"), ("sustained", "sustained"), ("p99 ms", "p99_ms"),
         ("RSS MiB", "rss_mib"), ("KiB/conn", "kib_per_connection")],
    ),
    "analytics": (
        "Analytics of one robot",
        [("Backend", "backend"), ("rows", "rows"),
         ("first s", "fleethub_cold_s"), ("repeat ms", "fleethub_ms"),
         ("row-by-row s", "baseline_s"), ("extrapolated", "baseline_extrapolated"),
         ("x first", "cold_speedup"), ("x repeat", "speedup")],
    ),
    "commands": (
        "Command round trip under ingest load",
        [("Server", "server"), ("load msg/s", "load_rate"), ("commands", "commands"),
         ("REST p50", "rest.p50_ms"), ("robot p50", "to_robot.p50_ms"),
         ("robot p99", "to_robot.p99_ms"), ("API p50", "to_api_report.p50_ms"),
         ("API p99", "to_api_report.p99_ms")],
    ),
}  # fmt: skip


def print_tables(console: Console, rows: list[dict[str, Any]]) -> None:
    """Print one table per scenario that has rows, then why ramps stopped."""
    for scenario, (title, columns) in TABLES.items():
        selected = [row for row in rows if row["scenario"] == scenario]
        if selected:
            console.print(_table(title, columns, selected))

    for row in rows:
        if row.get("limited_by"):
            reason = f"ramp stopped: {row['limited_by']}"
        else:
            reason = row.get("detail") or ""
        if reason:
            console.print(
                f"{row['scenario']} {row['server']} {row['backend']}: {reason}"
            )
