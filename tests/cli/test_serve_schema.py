"""``fleethub serve`` on a database whose schema is behind."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fleethub.cli.main import app


def test_serve_rejects_empty_schema(tmp_path: Path) -> None:
    """Serve exits with status 1 and a migrate hint, without a traceback."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    result = CliRunner().invoke(app, ["serve", "--database-url", url, "--port", "0"])
    output = " ".join(result.output.split())  # undo the console's line wrapping
    assert result.exit_code == 1
    assert "run 'fleethub migrate'" in output
    assert "Traceback" not in output


def test_serve_rejects_empty_postgres(postgres_url: str) -> None:
    """The same check applies on PostgreSQL."""
    arguments = ["serve", "--database-url", postgres_url, "--port", "0"]
    result = CliRunner().invoke(app, arguments)
    output = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "revision none (empty database)" in output
