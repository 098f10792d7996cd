"""Start-up checks of the security settings."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from limits import parse_many

from fleethub.errors import InsecureConfiguration

if TYPE_CHECKING:
    from fleethub.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def check_security_settings(settings: Settings) -> None:
    """Raise ValueError for a security setting that is invalid or unsafe."""
    if "*" in settings.cors_allow_origins and settings.cors_allow_credentials:
        raise ValueError(
            "cors_allow_origins contains '*' while cors_allow_credentials is true; "
            "list the allowed origins explicitly or switch credentials off."
        )
    key_sources = [
        settings.jwt_secret,
        settings.jwt_public_key_file,
        settings.jwt_jwks_file,
    ]
    configured = sum(source is not None for source in key_sources)
    if configured > 1:
        raise ValueError(
            "Set only one of jwt_secret, jwt_public_key_file and jwt_jwks_file."
        )
    if configured and not (settings.jwt_issuer and settings.jwt_audience):
        raise ValueError("JWT validation needs both jwt_issuer and jwt_audience.")
    for path in (settings.jwt_public_key_file, settings.jwt_jwks_file):
        if path is not None and not path.is_file():
            raise ValueError(f"JWT key file {str(path)!r} does not exist.")
    for name in ("rate_limit_api", "rate_limit_robot"):
        try:
            parse_many(getattr(settings, name))
        except ValueError as exc:
            raise ValueError(
                f"{name} {getattr(settings, name)!r} is invalid: {exc}. "
                "Write limits such as '20/second;1000/minute'."
            ) from None


def is_loopback(host: str) -> bool:
    """Return True when ``host`` names only this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ensure_safe_listen_address(settings: Settings) -> None:
    """Raise :class:`InsecureConfiguration` when auth is off on a public address."""
    if settings.auth_enabled or is_loopback(settings.host):
        return
    raise InsecureConfiguration(
        f"Authentication is switched off, so the server may only listen on a "
        f"loopback address, not {settings.host!r}. Set FLEETHUB_AUTH_ENABLED=true "
        "or listen on 127.0.0.1.",
        host=settings.host,
    )
