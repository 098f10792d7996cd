"""The benchmark harness runs every scenario end to end in a tiny configuration.

No timing is asserted: this only proves that servers start, the load
processes report, rows get counted and the report is built.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from fleethub.bench.config import BenchConfig, SilentReporter
from fleethub.bench.databases import DEFAULT_POSTGRES_URL
from fleethub.bench.report import print_tables, write_json
from fleethub.bench.suite import run_suite

BASELINES = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    config = BenchConfig(
        work_dir=tmp_path_factory.mktemp("bench"),
        baselines_dir=BASELINES,
        postgres_url=DEFAULT_POSTGRES_URL,
        backends=("sqlite",),
        baseline_scenarios=("ingest", "analytics"),
        robots=3,
        step_s=0.5,
        start_rate=30.0,
        max_rate=30.0,
        fanout_cases=((2, 20.0, 0), (2, 20.0, 50)),
        connections=10,
        connection_step_s=0.5,
        analytics_rows={"sqlite": (500,)},
        baseline_analytics_rows=100,
        analytics_repeats=1,
        command_count=2,
        command_load_rate=20.0,
        command_step_s=2.0,
    )
    return run_suite(config, SilentReporter())


def rows_of(result: dict, scenario: str) -> list[dict]:
    return [row for row in result["rows"] if row["scenario"] == scenario]


def test_ingest_stores_every_acked_state(result: dict) -> None:
    """Each server's acknowledged states are all found in its database."""
    rows = {row["server"]: row for row in rows_of(result, "ingest")}
    assert set(rows) == {"fleethub", "minimal", "tutorial"}
    for row in rows.values():
        assert row["acked"] > 0, row
        assert row["stored_rows"] >= row["acked"], row
        assert row["steps"], row


def test_ingest_ratios_computed(result: dict) -> None:
    """fleethub's row carries its ratio to both baselines."""
    fleethub = next(r for r in rows_of(result, "ingest") if r["server"] == "fleethub")
    assert "vs_minimal" in fleethub
    assert "vs_tutorial" in fleethub


def test_connections_all_open(result: dict) -> None:
    """Every robot connection of the connection scenario opens."""
    (row,) = rows_of(result, "connections")
    assert row["connected"] == 10
    assert row["rss_mib"] is not None


def test_analytics_timed_on_both(result: dict) -> None:
    """Analytics is timed on fleethub, first and repeated, and on the baseline."""
    (row,) = rows_of(result, "analytics")
    assert row["fleethub_cold_s"] is not None
    assert row["fleethub_s"] is not None
    assert row["baseline_s"] is not None
    assert row["baseline_extrapolated"] is True


def test_commands_reach_robot(result: dict) -> None:
    """Commands posted over REST reach the robot and show in the events API."""
    (row,) = rows_of(result, "commands")
    assert row["commands"] >= 1
    assert row["received_by_robot"] == row["commands"]
    assert row["reported_by_api"] == row["commands"]


def test_fanout_reports_availability(result: dict) -> None:
    """Each fan-out row records whether /ws/fleet exists and its batch interval."""
    rows = rows_of(result, "fanout")
    assert [row["batch_ms"] for row in rows] == [0, 50]
    for row in rows:
        assert row["available"] is True


def test_report_renders(result: dict, tmp_path: Path) -> None:
    """The tables print and the JSON file round-trips."""
    console = Console(record=True, width=160)
    print_tables(console, result["rows"])
    assert "Ingest" in console.export_text()
    path = tmp_path / "bench.json"
    write_json(path, result)
    assert json.loads(path.read_text())["machine"]["cores"] >= 1
