"""The one settings object, read from the environment (prefix ``FLEETHUB_``).

Every CLI flag of ``fleethub serve`` and ``fleethub demo`` maps to the field
of the same name here, so ``--database-url`` and ``FLEETHUB_DATABASE_URL`` set
the same value.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Validated configuration shared by the server and the CLI."""

    model_config = SettingsConfigDict(env_prefix="FLEETHUB_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the server listens on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the server.")
    database_url: str = Field(
        "sqlite+aiosqlite:///fleethub.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///PATH or "
        "postgresql+asyncpg://USER@HOST/DB.",
    )
    redis_url: str | None = Field(
        None, description="redis://HOST:PORT/DB; unset keeps live state in memory."
    )
    log_level: str = Field("INFO", description="Root log level.")
    log_format: str = Field("console", pattern="^(console|json)$")

    # Telemetry writer
    # Maximum states per transaction. Under a backlog, larger batches cost fewer
    # commits per state; at low rates the flush interval bounds batches anyway.
    writer_batch_size: int = Field(5000, ge=1, le=100_000)
    writer_flush_interval_s: float = Field(0.05, gt=0, le=10)
    writer_max_buffer: int = Field(50_000, ge=100, description="States held in memory before robots are told to slow down.")

    # Robot link
    max_frame_bytes: int = Field(256 * 1024, ge=1024)
    max_lidar_beams: int = Field(4096, ge=1)
    max_future_skew_s: float = Field(
        60.0, ge=0, description="How far ahead of the server clock a state may be."
    )
    offline_after_s: float = Field(
        30.0, gt=0, description="Seconds without a state before a robot counts as offline."
    )

    # Built-in rules
    battery_low_percent: float = Field(20.0, ge=0, le=100)
    battery_low_clear_percent: float = Field(25.0, ge=0, le=100)
    obstacle_distance_m: float = Field(0.5, gt=0)
    obstacle_clear_distance_m: float = Field(0.6, gt=0)

    # Analytics
    analytics_max_gap_s: float = Field(
        60.0,
        gt=0,
        description="Gaps between samples longer than this do not count as operating time.",
    )

    # API
    max_page_size: int = Field(1000, ge=1, le=100_000)
