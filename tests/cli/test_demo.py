"""``fleethub demo`` end to end, as a user runs it: a subprocess on a free port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Path length of the Intel log's ODOM poses with a non-zero timestamp, in file
# order. The replay policy yields 530.3 m, 0.7 % below it.
LOG_PATH_LENGTH_M = 534.1
LOG_SAMPLES = 13_631
SIMULATED_ROBOTS = 2

Summary = dict[str, Any]


def run_demo(summary_path: Path) -> subprocess.CompletedProcess[str]:
    # A FLEETHUB_* variable from the caller's shell would change what the demo runs.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("FLEETHUB_")
    }
    command = [
        sys.executable,
        "-m",
        "fleethub",
        "demo",
        "--exit-after-replay",
        "--speed",
        "0",
        "--robots",
        str(SIMULATED_ROBOTS),
        "--port",
        "0",
        "--summary-json",
        str(summary_path),
    ]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def demo_summary(tmp_path_factory: pytest.TempPathFactory) -> Summary:
    """Run the demo once for this module and return its JSON summary."""
    summary_path = tmp_path_factory.mktemp("demo") / "summary.json"
    result = run_demo(summary_path)

    assert result.returncode == 0, result.stderr
    assert "fleethub is serving on http://127.0.0.1:" in result.stderr
    return json.loads(summary_path.read_text())


def test_demo_summary_keys(demo_summary: Summary) -> None:
    """The summary JSON has every documented key with the documented types."""
    replayed = demo_summary["replayed_robot"]

    assert isinstance(demo_summary["robots"], int)
    assert isinstance(demo_summary["states_sent"], int)
    assert isinstance(demo_summary["states_acked"], int)
    assert isinstance(demo_summary["telemetry_rows"], int)
    assert isinstance(demo_summary["events"], dict)
    assert replayed["robot_id"] == "intel-lab"
    assert isinstance(replayed["distance_m"], float)
    assert isinstance(replayed["avg_linear_velocity_mps"], float)
    assert isinstance(replayed["operating_hours"], float)
    assert isinstance(replayed["samples"], int)


def test_demo_every_state_acked_and_stored(demo_summary: Summary) -> None:
    """Every state sent is acknowledged and stored, none rejected."""
    assert demo_summary["states_sent"] == demo_summary["states_acked"]
    assert demo_summary["states_acked"] == demo_summary["telemetry_rows"]
    assert demo_summary["states_rejected"] == {}
    assert demo_summary["telemetry_rows"] > LOG_SAMPLES
    assert demo_summary["robots"] == SIMULATED_ROBOTS + 1


def test_demo_replayed_robot_figures(demo_summary: Summary) -> None:
    """The replayed log's distance, samples and obstacle events match the log."""
    replayed = demo_summary["replayed_robot"]

    assert replayed["distance_m"] == pytest.approx(LOG_PATH_LENGTH_M, rel=0.02)
    assert replayed["samples"] == LOG_SAMPLES
    assert replayed["operating_hours"] > 0.7
    assert demo_summary["events"]["obstacle_detected"] > 0
    assert demo_summary["events"]["robot_connected"] == SIMULATED_ROBOTS + 1
