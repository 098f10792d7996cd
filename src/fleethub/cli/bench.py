"""``fleethub bench``: run the benchmark suite with a progress bar and tables."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from fleethub.bench.config import SCENARIOS, BenchConfig
from fleethub.bench.databases import DEFAULT_POSTGRES_URL
from fleethub.bench.report import print_tables, write_json
from fleethub.bench.stats import StepResult
from fleethub.bench.suite import run_suite


class ProgressReporter:
    """Shows the running scenario and the load's latest step on a progress bar."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=total)
        self.current = ""
        self.started = 0

    def status(self, text: str) -> None:
        name = text.split(":", 1)[0]
        if self.current and name != self.current:
            self.progress.advance(self.task)
        self.current = name
        self.progress.update(self.task, description=text)
        self.progress.console.log(text)

    def event(self, kind: str, payload: Any) -> None:
        if kind == "step" and isinstance(payload, StepResult):
            verdict = (
                "sustained" if payload.sustained else f"not sustained: {payload.reason}"
            )
            p99 = payload.latency.p99_ms or 0.0
            self.progress.console.log(
                f"  {payload.target_rate:,.0f} msg/s -> "
                f"acked {payload.ack_rate:,.0f}/s, p99 {p99:,.0f} ms, {verdict}"
            )
        elif kind == "connected":
            self.progress.console.log(f"  {payload['robots']} robots connected")


def bench(
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Small sizes and SQLite only; under two minutes."),
    ] = False,
    scenario: Annotated[
        list[str] | None,
        typer.Option(help=f"Scenario to run (repeatable): {', '.join(SCENARIOS)}."),
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(help="Database backend (repeatable): sqlite, postgresql."),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write every figure to this JSON file."),
    ] = None,
    postgres_url: Annotated[
        str,
        typer.Option(help="PostgreSQL server on which to create throw-away databases."),
    ] = DEFAULT_POSTGRES_URL,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis URL for the runs that use a Redis cache.")
    ] = None,
    baselines: Annotated[
        Path, typer.Option(help="Folder with minimal_server.py and tutorial_server.py.")
    ] = Path("benchmarks"),
) -> None:
    """Benchmark fleethub against the baseline servers in the same run."""
    unknown = set(scenario or ()) - set(SCENARIOS)
    if unknown:
        raise typer.BadParameter(
            f"Unknown scenario {sorted(unknown)}; choose from {', '.join(SCENARIOS)}."
        )
    console = Console(width=max(Console().width, 120))
    with tempfile.TemporaryDirectory(prefix="fleethub-bench-") as work_dir:
        options: dict[str, Any] = {
            "work_dir": Path(work_dir),
            "baselines_dir": baselines if baselines.is_dir() else None,
            "postgres_url": postgres_url,
            "redis_url": redis_url,
        }
        config = (
            BenchConfig.quick_run(**options)
            if quick
            else BenchConfig.full_run(**options)
        )
        if scenario:
            config.scenarios = tuple(s for s in SCENARIOS if s in scenario)
        if backend:
            config.backends = tuple(backend)
        result = _run_with_progress(console, config)
    print_tables(console, result["rows"])
    for note in result["notes"]:
        console.print(f"[yellow]Note:[/] {note}")
    console.print(f"Finished in {result['duration_s']:.0f} s.")
    if json_path is not None:
        write_json(json_path, result)
        console.print(f"Wrote {json_path}.")


def _run_with_progress(console: Console, config: BenchConfig) -> dict[str, Any]:
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        reporter = ProgressReporter(progress, len(config.scenarios))
        result = run_suite(config, reporter)
        progress.update(
            reporter.task, completed=len(config.scenarios), description="done"
        )
    return result
