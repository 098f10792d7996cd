"""The replay command passes the robot credential from --token or the environment."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from auth_helpers import robot_token
from fleethub.cli.main import app as cli
from fleethub.cli.server import running_server
from security.support import secure_settings


def _write_log(path: Path, samples: int) -> Path:
    lines = [
        f"ODOM {0.1 * i:.2f} 0.0 0.0 0.1 0 0 {i * 0.2:.2f} host {i * 0.2:.2f}"
        for i in range(samples)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def _replay(
    log: Path, url: str, robot_id: str, *options: str, env: dict[str, str]
) -> Result:
    arguments = ["replay", str(log), "--robot-id", robot_id, "--speed", "0"]
    return CliRunner().invoke(cli, [*arguments, "--url", url, *options], env=env)


async def test_replay_uses_token_option_and_environment(tmp_path: Path) -> None:
    """Replays authenticate with --token or FLEETHUB_ROBOT_TOKEN and store states."""
    log = _write_log(tmp_path / "robot.log", samples=5)
    async with running_server(secure_settings(tmp_path), migrate_schema=True) as server:
        token = await robot_token(server, "by-option")
        by_option = await asyncio.to_thread(
            _replay, log, server.ws_url, "by-option", "--token", token, env={}
        )
        env = {"FLEETHUB_ROBOT_TOKEN": await robot_token(server, "by-env")}
        by_env = await asyncio.to_thread(_replay, log, server.ws_url, "by-env", env=env)
        storage = server.app.state.services.storage
        stored = [
            await storage.count_telemetry(robot_id)
            for robot_id in ("by-option", "by-env")
        ]
    assert by_option.exit_code == 0, by_option.output
    assert by_env.exit_code == 0, by_env.output
    assert "5 acknowledged" in by_option.output
    assert stored == [5, 5]
