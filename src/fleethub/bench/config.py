"""Configuration of one benchmark run: scenarios, sizes, durations and servers."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fleethub.bench.servers import ServerSpec

SCENARIOS = ("ingest", "fanout", "connections", "analytics", "commands")
SERVER_KINDS = ("fleethub", "minimal", "tutorial")

# First ramp step per server, msg/s. A ramp whose first step fails halves the
# rate, so these only save time and do not bound a result.
START_RATES = {"fleethub": 2000.0, "minimal": 2000.0, "tutorial": 100.0}


class Reporter(Protocol):
    """Progress sink of the scenarios: the CLI's progress bar, or nothing."""

    def status(self, text: str) -> None:
        """Describe what runs now."""

    def event(self, kind: str, payload: Any) -> None:
        """Take a progress event from a load process."""


class SilentReporter:
    """A reporter that drops everything."""

    def status(self, text: str) -> None:
        pass

    def event(self, kind: str, payload: Any) -> None:
        pass


@dataclass
class BenchConfig:
    """Sizes and durations of one run; :meth:`quick` and :meth:`full` fill them."""

    work_dir: Path
    baselines_dir: Path | None
    postgres_url: str
    redis_url: str | None = None
    scenarios: tuple[str, ...] = SCENARIOS
    backends: tuple[str, ...] = ("sqlite", "postgresql")
    quick: bool = True
    robots: int = 50
    step_s: float = 2.0
    refine: bool = False
    baseline_scenarios: tuple[str, ...] = ("ingest", "connections", "analytics")
    start_rate: float | None = None
    max_rate: float = 200_000.0
    # (subscribers, states per second, batch_ms): a few consoles take every
    # state as its own frame; the dashboard-sized cases ask /ws/fleet for
    # batch frames. The full run uses 10 ms batches, the interval with the
    # lowest p99 for 1,000 subscribers at 200 states/s in a sweep from 5 to
    # 50 ms on a 2-core machine (BENCHMARKS.md lists the sweep).
    fanout_cases: tuple[tuple[int, float, int], ...] = (
        (10, 1000.0, 0),
        (100, 100.0, 25),
    )
    connections: int = 500
    connection_step_s: float = 5.0
    analytics_rows: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {"sqlite": (1_000_000,), "postgresql": (1_000_000,)}
    )
    baseline_analytics_rows: int | None = 20_000
    # Requests timed after the first one, which may have to build the rollups.
    analytics_repeats: int = 2
    command_count: int = 20
    command_load_rate: float = 1000.0
    command_step_s: float = 8.0

    @classmethod
    def quick_run(cls, **kwargs: Any) -> BenchConfig:
        """Build a configuration that runs in under two minutes on SQLite."""
        return cls(backends=("sqlite",), **kwargs)

    @classmethod
    def full_run(cls, **kwargs: Any) -> BenchConfig:
        """Build the configuration behind the figures in BENCHMARKS.md."""
        return cls(
            quick=False,
            robots=100,
            step_s=5.0,
            refine=True,
            fanout_cases=((10, 5000.0, 0), (1000, 200.0, 10)),
            connections=2000,
            connection_step_s=10.0,
            analytics_rows={
                "sqlite": (1_000_000,),
                "postgresql": (1_000_000, 10_000_000),
            },
            baseline_analytics_rows=1_000_000,
            analytics_repeats=3,
            command_count=50,
            command_load_rate=4000.0,
            command_step_s=20.0,
            **kwargs,
        )

    def server_kinds(self, scenario: str = "ingest") -> list[str]:
        """Return fleethub plus the baselines whose scripts exist for ``scenario``."""
        kinds = ["fleethub"]
        if scenario not in self.baseline_scenarios:
            return kinds
        for kind in SERVER_KINDS[1:]:
            if self.baseline_script(kind) is not None:
                kinds.append(kind)
        return kinds

    def baseline_script(self, kind: str) -> Path | None:
        if self.baselines_dir is None:
            return None
        script = self.baselines_dir / f"{kind}_server.py"
        return script if script.is_file() else None

    def ramp_start(self, kind: str) -> float:
        """Return the first ramp step for ``kind``, msg/s."""
        return self.start_rate if self.start_rate is not None else START_RATES[kind]

    def uses_redis(self, kind: str) -> bool:
        """Return whether ``kind`` keeps its latest state in Redis in this run."""
        if self.redis_url is None:
            return False
        if kind == "fleethub":
            return redis_live_state_available()
        return kind == "tutorial"

    def server_spec(
        self, kind: str, database_url: str, *, redis: bool = False
    ) -> ServerSpec:
        """Describe how to start ``kind`` on ``database_url``."""
        if kind == "fleethub":
            # The baselines have no authentication, so fleethub runs without it
            # too (allowed on loopback); with it, per-robot rate limits would cap
            # the load by design. BENCHMARKS.md states this.
            env = {"FLEETHUB_AUTH_ENABLED": "false"}
            if redis and self.redis_url is not None:
                env["FLEETHUB_REDIS_URL"] = self.redis_url
            return ServerSpec(kind, database_url, env=env)
        script = self.baseline_script(kind)
        args: tuple[str, ...] = ()
        if redis and kind == "tutorial" and self.redis_url:
            args = ("--redis-url", self.redis_url)
        return ServerSpec(kind, database_url, str(script), args)


def redis_live_state_available() -> bool:
    """Return whether this build of fleethub can keep live state in Redis."""
    return importlib.util.find_spec("fleethub.live.redis") is not None
