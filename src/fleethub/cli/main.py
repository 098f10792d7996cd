"""``fleethub``: serve, demo, replay, sim, migrate and bench.

Every option of ``serve`` and ``demo`` that names a setting falls back to its
``FLEETHUB_*`` environment variable, so ``--database-url X`` and
``FLEETHUB_DATABASE_URL=X`` do the same.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from fleethub.errors import InsecureConfiguration
from fleethub.logs import configure_logging
from fleethub.security.cli import keys_app, robots_app
from fleethub.settings import Settings

app = typer.Typer(
    help="fleethub: a backend for fleets of mobile robots.", no_args_is_help=True
)
console = Console(stderr=True)

HostOpt = Annotated[
    str | None, typer.Option(help="Address to listen on [FLEETHUB_HOST].")
]
PortOpt = Annotated[
    int | None, typer.Option(help="TCP port, 0 for any free one [FLEETHUB_PORT].")
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(help="SQLAlchemy database URL [FLEETHUB_DATABASE_URL]."),
]
LogLevelOpt = Annotated[
    str | None, typer.Option(help="Log level [FLEETHUB_LOG_LEVEL].")
]
RedisOpt = Annotated[
    str | None,
    typer.Option(help="Redis URL for live state and the bus [FLEETHUB_REDIS_URL]."),
]

# Credentials of the robot clients (replay, sim) and the credential commands.
RobotTokenOpt = Annotated[
    str | None,
    typer.Option(
        envvar="FLEETHUB_ROBOT_TOKEN",
        help="The robot's credential, from 'fleethub robots add'.",
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        envvar="FLEETHUB_API_KEY",
        help="Admin API key; each simulated robot gets a new credential through it.",
    ),
]
app.add_typer(keys_app, name="keys")
app.add_typer(robots_app, name="robots")


def bearer(token: str | None) -> dict[str, str] | None:
    """Return the robot link's Authorization header for ``token``, if any."""
    return {"Authorization": f"Bearer {token}"} if token else None


def build_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the CLI options given on top."""
    return Settings(
        **{key: value for key, value in overrides.items() if value is not None}
    )


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    database_url: DatabaseOpt = None,
    log_level: LogLevelOpt = None,
    migrate: Annotated[
        bool, typer.Option("--migrate", help="Apply pending schema migrations first.")
    ] = False,
    redis_url: RedisOpt = None,
) -> None:
    """Run the fleethub server until interrupted."""
    from fleethub.api.app import create_app
    from fleethub.cli.checks import exit_if_database_in_use, exit_unless_schema_current
    from fleethub.cli.server import uvicorn_config
    from fleethub.security.config import ensure_safe_listen_address

    settings = build_settings(
        host=host,
        port=port,
        database_url=database_url,
        log_level=log_level,
        redis_url=redis_url,
    )
    configure_logging(settings.log_level, settings.log_format)
    try:
        ensure_safe_listen_address(settings)
    except InsecureConfiguration as exc:
        console.print(f"[red]Error:[/] {exc.message}")
        raise typer.Exit(2) from None
    exit_if_database_in_use(settings, console)
    if not migrate:
        exit_unless_schema_current(settings, console)
    fleet_app = create_app(
        settings, migrate_schema=migrate, freeze_startup_objects=True
    )
    uvicorn.Server(uvicorn_config(fleet_app, settings)).run()


@app.command()
def migrate(database_url: DatabaseOpt = None) -> None:
    """Create or upgrade the database schema to this version."""
    from fleethub.backends import create_engine_for
    from fleethub.storage import migrate as migrations

    settings = build_settings(database_url=database_url)

    async def run() -> None:
        engine = create_engine_for(settings)
        try:
            before = await migrations.current_revision(engine)
            await migrations.upgrade(engine)
            console.print(
                f"Schema upgraded from {before or 'empty'} "
                f"to {migrations.head_revision()}."
            )
        finally:
            await engine.dispose()

    asyncio.run(run())


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@app.command()
def replay(
    log: Annotated[
        Path | None,
        typer.Argument(
            help="CARMEN log, plain or gzip; default: the bundled Intel Lab log."
        ),
    ] = None,
    robot_id: Annotated[str, typer.Option(help="Robot id to replay as.")] = "intel-lab",
    speed: Annotated[
        float,
        typer.Option(
            help="Replay rate against the log's clock; 0 sends as fast as acknowledged."
        ),
    ] = 10.0,
    url: Annotated[
        str, typer.Option(help="Server WebSocket base URL.")
    ] = "ws://127.0.0.1:8000",
    token: RobotTokenOpt = None,
) -> None:
    """Stream a CARMEN log to a running server as one robot."""
    from fleethub.replay.carmen import intel_lab_log
    from fleethub.replay.runner import replay as run_replay

    source = log if log is not None else intel_lab_log()

    async def run() -> None:
        with _progress() as progress:
            task = progress.add_task(f"replaying {robot_id}", total=None)
            result = await run_replay(
                source,
                url,
                robot_id,
                speed=speed,
                headers=bearer(token),
                on_progress=lambda done, total: progress.update(
                    task, completed=done, total=total
                ),
            )
        console.print(
            f"Sent {result.stats.sent} states, {result.stats.acked} acknowledged, "
            f"rejected {result.stats.rejected or 'none'}, "
            f"in {result.wall_seconds:.1f} s."
        )

    asyncio.run(run())


@app.command()
def sim(
    robots: Annotated[
        int, typer.Option(min=1, max=10_000, help="Number of simulated robots.")
    ] = 3,
    url: Annotated[
        str, typer.Option(help="Server WebSocket base URL.")
    ] = "ws://127.0.0.1:8000",
    rate_hz: Annotated[
        float, typer.Option(min=0.1, max=100, help="States per second per robot.")
    ] = 5.0,
    time_scale: Annotated[
        float, typer.Option(min=1, help="Battery speed-up factor.")
    ] = 1.0,
    api_key: ApiKeyOpt = None,
    token: RobotTokenOpt = None,
) -> None:
    """Run simulated robots against a running server until interrupted.

    Robots authenticate with credentials issued through ``--api-key``, or,
    for a single robot (sim-001), with ``--token``.
    """
    from fleethub.security.provision import issue_robot_tokens
    from fleethub.sim.robots import SimConfig, make_robot, run_robot

    if token is not None and robots != 1:
        console.print(
            "[red]Error:[/] --token serves one robot; use --api-key for more."
        )
        raise typer.Exit(2)

    async def run() -> None:
        stop = asyncio.Event()
        config = SimConfig(rate_hz=rate_hz, time_scale=time_scale)
        fleet = [make_robot(i, config) for i in range(robots)]
        robot_ids = [robot.robot_id for robot in fleet]
        tokens = await issue_robot_tokens(url, api_key, robot_ids)
        if token is not None:
            tokens = {robot_ids[0]: token}
        tasks = [
            asyncio.create_task(
                run_robot(robot, url, stop, bearer(tokens.get(robot.robot_id)))
            )
            for robot in fleet
        ]
        console.print(f"Running {robots} simulated robots against {url}; Ctrl-C stops.")
        await asyncio.gather(*tasks)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


@app.command()
def demo(
    port: PortOpt = None,
    database_url: DatabaseOpt = None,
    speed: Annotated[
        float,
        typer.Option(
            help="Replay rate against the log's clock; at 10 the 45-minute log "
            "lasts about 4.5 minutes."
        ),
    ] = 10.0,
    robots: Annotated[
        int, typer.Option(min=0, max=1000, help="Number of simulated robots.")
    ] = 3,
    exit_after_replay: Annotated[
        bool, typer.Option(help="Stop after the replay and print a summary.")
    ] = False,
    summary_json: Annotated[
        Path | None, typer.Option(help="Also write the summary to this JSON file.")
    ] = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Run fleethub on SQLite with a real robot log replayed and simulated robots."""
    from fleethub.cli.checks import exit_if_database_in_use
    from fleethub.cli.demo import run_demo

    settings = build_settings(
        port=port, database_url=database_url, log_level=log_level or "WARNING"
    )
    configure_logging(settings.log_level, settings.log_format)
    if database_url is not None:
        exit_if_database_in_use(settings, console)
    try:
        asyncio.run(
            run_demo(
                settings,
                console=console,
                progress=_progress(),
                speed=speed,
                robots=robots,
                exit_after_replay=exit_after_replay,
                summary_json=summary_json,
                fresh_database=database_url is None,
            )
        )
    except KeyboardInterrupt:
        console.print("Stopped.")


# Benchmarks: the command lives in its own module to keep this one small.
from fleethub.cli.bench import bench  # noqa: E402

app.command()(bench)
