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
    writer_batch_size: int = Field(500, ge=1, le=100_000)
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
