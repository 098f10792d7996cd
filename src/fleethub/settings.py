"""The one settings object, read from the environment (prefix ``FLEETHUB_``).

Every CLI flag of ``fleethub serve`` and ``fleethub demo`` maps to the field
of the same name here, so ``--database-url`` and ``FLEETHUB_DATABASE_URL`` set
the same value.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Validated configuration shared by the server and the CLI."""

    model_config = SettingsConfigDict(env_prefix="FLEETHUB_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the server listens on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the server.")
    shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a stopping server waits for open connections before "
        "it cancels them; a client that stopped reading would otherwise hold it.",
    )
    database_url: str = Field(
        "sqlite+aiosqlite:///fleethub.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///PATH or "
        "postgresql+asyncpg://USER@HOST/DB.",
    )
    redis_url: str | None = Field(
        None, description="redis://HOST:PORT/DB; unset keeps live state in memory."
    )
    # Production backends: PostgreSQL pool and partitions, Redis
    # The hard cap on PostgreSQL connections per process. From 2 up, one of
    # them is the telemetry writer's own COPY connection and the pool gets the
    # rest. At 1, the writer borrows the pool's only connection for each batch.
    database_pool_size: int = Field(
        10,
        ge=1,
        le=1000,
        description="PostgreSQL connections per process, the telemetry writer's "
        "COPY connection included.",
    )
    database_pool_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds to wait for a free PostgreSQL connection before failing.",
    )
    telemetry_partition_days_ahead: int = Field(
        3, ge=0, le=365, description="Daily telemetry partitions created ahead."
    )
    telemetry_retention_days: int | None = Field(
        None, ge=1, description="Days of telemetry kept on PostgreSQL; unset keeps all."
    )
    redis_prefix: str = Field(
        "fleethub:", description="Prefix of every Redis key and channel fleethub uses."
    )
    redis_presence_ttl_s: float = Field(
        15.0,
        ge=1,
        description="Seconds a robot stays online in Redis after its process stops.",
    )
    redis_flush_interval_s: float = Field(
        0.1, gt=0, le=5, description="Seconds between batched live-state writes."
    )

    log_level: str = Field("INFO", description="Root log level.")
    log_format: str = Field("console", pattern="^(console|json)$")

    # Telemetry writer
    # Maximum states per transaction. Under a backlog, larger batches cost fewer
    # commits per state; at low rates the flush interval bounds batches anyway.
    writer_batch_size: int = Field(5000, ge=1, le=100_000)
    writer_flush_interval_s: float = Field(0.05, gt=0, le=10)
    writer_max_buffer: int = Field(
        50_000,
        ge=100,
        description="States buffered in memory before robots get a slow_down frame.",
    )

    # Robot link
    max_frame_bytes: int = Field(256 * 1024, ge=1024)
    max_lidar_beams: int = Field(4096, ge=1)
    max_future_skew_s: float = Field(
        60.0, ge=0, description="How far ahead of the server clock a state may be."
    )
    offline_after_s: float = Field(
        30.0,
        gt=0,
        description="Seconds without a state before a robot counts as offline.",
    )

    # Rules, alerts, operator stream and webhooks
    rules_file: Path | None = Field(
        None, description="TOML rules file; unset uses the rules bundled with fleethub."
    )
    rules_tick_interval_s: float = Field(
        1.0, gt=0, le=60, description="Seconds between evaluations of time-based rules."
    )
    stream_max_subscribers: int = Field(1000, ge=1)
    # One log shared by every subscriber, so it can be longer than the old
    # per-subscriber queues: 2,048 states are 0.4 s at 5,000 states/s.
    stream_state_queue: int = Field(
        2048,
        ge=1,
        description="Latest states the stream keeps for subscribers that fall "
        "behind; older ones are missed.",
    )
    stream_event_queue: int = Field(
        1024,
        ge=1,
        description="Latest events the stream keeps; a subscriber that has not "
        "read one it wants by the time it leaves is closed.",
    )
    stream_max_missed: int = Field(
        2048, ge=1, description="States a subscriber may miss before it is closed."
    )
    stream_tick_ms: float = Field(
        5.0,
        gt=0,
        le=1000,
        description="Stream senders wake at most this often after new messages, "
        "so a burst costs each subscriber one wake-up.",
    )
    webhook_max_attempts: int = Field(
        5, ge=1, le=100, description="HTTP attempts per retry round."
    )
    webhook_backoff_initial_s: float = Field(0.5, ge=0, le=3600)
    webhook_backoff_max_s: float = Field(30.0, ge=0, le=3600)
    webhook_timeout_s: float = Field(10.0, gt=0, le=300)
    webhook_breaker_threshold: int = Field(
        5, ge=1, description="Failures in a row that open a webhook's circuit breaker."
    )
    webhook_breaker_reset_s: float = Field(
        30.0, gt=0, description="Seconds an open breaker waits before a trial request."
    )
    webhook_retry_pause_s: float = Field(
        30.0, gt=0, description="Seconds between retry rounds of an undelivered event."
    )
    webhook_max_age_s: float = Field(
        86_400.0, gt=0, description="Undelivered events older than this are dropped."
    )

    # Analytics
    analytics_max_gap_s: float = Field(
        60.0,
        gt=0,
        description="Gaps between samples longer than this (s) are not operating time.",
    )

    # Commands and missions
    command_ack_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a sent command may stay unacknowledged before it is "
        "queued again for resending.",
    )
    command_max_attempts: int = Field(
        5, ge=1, description="Sends of one command before it is marked failed."
    )
    command_default_ttl_s: float = Field(
        3600.0, gt=0, description="Seconds a command posted without a TTL may wait."
    )
    command_max_ttl_s: float = Field(
        7 * 86400.0, gt=0, description="Maximum time to live of a command, seconds."
    )
    lifecycle_sweep_interval_s: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="Seconds between checks for expired commands and timed-out "
        "missions.",
    )
    mission_battery_reserve_percent: float = Field(
        30.0,
        ge=0,
        le=100,
        description="A robot takes a new mission only with more battery than this.",
    )
    mission_default_timeout_s: float = Field(
        600.0, gt=0, description="Seconds a mission may run after assignment."
    )
    mission_default_tolerance_m: float = Field(
        0.5, gt=0, description="Metres within which a waypoint counts as reached."
    )
    mission_max_waypoints: int = Field(500, ge=1)

    # API
    max_page_size: int = Field(1000, ge=1, le=100_000)

    # Observability
    sentry_dsn: SecretStr | None = Field(
        None,
        description="Sentry DSN for reporting unexpected errors; unset sends nothing.",
    )
    sentry_environment: str = Field("production", max_length=64)
    ready_timeout_s: float = Field(
        2.0, gt=0, le=60, description="Seconds each readiness check may take."
    )
    ready_max_ack_lag_s: float = Field(
        10.0,
        gt=0,
        description="Readiness fails when the oldest unacknowledged state is older.",
    )
    rejected_log_lines_per_interval: int = Field(
        5, ge=0, description="Rejected-input log lines per robot per interval."
    )
    rejected_log_interval_s: float = Field(
        60.0, gt=0, description="Seconds per rejected-input log interval."
    )

    # Robot health thresholds
    health_window_s: float = Field(
        3600.0, gt=0, description="Seconds of history robot health looks back on."
    )
    health_rate_window_s: float = Field(
        60.0, gt=0, description="Seconds over which the message rate is averaged."
    )
    health_uptime_warning_ratio: float = Field(
        0.9, ge=0, le=1, description="Warning when online less than this share."
    )
    health_connections_warning: int = Field(
        5, ge=1, description="Warning at this many connections in the window."
    )
    health_errors_warning: int = Field(
        10, ge=1, description="Warning at this many errors in the window."
    )
    health_errors_unhealthy: int = Field(
        100, ge=1, description="Unhealthy at this many errors in the window."
    )
    health_battery_drain_warning_percent_per_h: float = Field(
        30.0, gt=0, description="Warning when the battery falls faster (%/h)."
    )
    health_battery_unhealthy_percent: float = Field(
        20.0, ge=0, le=100, description="Unhealthy when the battery is below this (%)."
    )

    # Security: authentication, rate limits, input size limits, CORS
    auth_enabled: bool = Field(
        True,
        description="Require a credential on every route except the probes; "
        "switching it off is allowed on a loopback address only.",
    )
    docs_public: bool = Field(
        False, description="Serve /docs, /redoc and /openapi.json without a credential."
    )
    metrics_access: str = Field(
        "viewer",
        pattern="^(public|viewer|operator|admin)$",
        description="Role that may read /metrics, or 'public' for none.",
    )
    jwt_issuer: str | None = Field(None, description="Required 'iss' claim of JWTs.")
    jwt_audience: str | None = Field(None, description="Required 'aud' claim of JWTs.")
    jwt_secret: SecretStr | None = Field(
        None, description="Shared secret for HS256/HS384/HS512 JWTs."
    )
    jwt_public_key_file: Path | None = Field(
        None, description="PEM public key for RS*, PS*, ES* or EdDSA JWTs."
    )
    jwt_jwks_file: Path | None = Field(
        None, description="JWKS file; the JWT header's 'kid' selects the key."
    )
    jwt_role_claim: str = Field(
        "role", description="Claim holding the role name or a list of role names."
    )
    jwt_leeway_s: float = Field(30.0, ge=0, le=600, description="Clock skew allowed.")
    rate_limit_api: str = Field(
        "20/second;1000/minute",
        description="Requests and WebSocket messages per API key or JWT subject, "
        "in the 'limits' notation, several separated by ';'.",
    )
    rate_limit_robot: str = Field(
        "100/second", description="WebSocket messages per robot, same notation."
    )
    rate_limit_key_prefix: str = Field(
        "fleethub-rl", description="Prefix of the rate-limit counters in Redis."
    )
    max_request_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_string_length: int = Field(
        4096,
        ge=16,
        description="Maximum length of a JSON string or key, or a query value.",
    )
    max_list_length: int = Field(
        1000,
        ge=1,
        description="Maximum entries in a JSON array or object, and query parameters.",
    )
    max_json_depth: int = Field(
        32, ge=2, description="Maximum nesting depth of a JSON body."
    )
    cors_allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser.",
    )
    cors_allow_credentials: bool = Field(
        False, description="Let browsers send cookies and HTTP auth on CORS requests."
    )

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        from fleethub.security.config import check_security_settings

        check_security_settings(self)
        return self
