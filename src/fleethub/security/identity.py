"""JWTs from an identity provider, validated with PyJWT.

The key comes from exactly one setting: ``jwt_secret`` (HMAC), a PEM public
key file, or a JWKS file whose ``kid`` entries select the key. The allowed
algorithms follow from the kind of key, so a token cannot switch a public key
into an HMAC secret by naming ``HS256`` in its header. Every token must carry
``exp``, ``iss``, ``aud`` and ``sub``. The role comes from the claim named by
``jwt_role_claim``, which contains a role name or a list of them, and the
highest known role in it counts.
"""

from __future__ import annotations

import logging
from typing import Any

import jwt

from fleethub.errors import Forbidden, Unauthenticated
from fleethub.security.principals import Principal, Role
from fleethub.settings import Settings

logger = logging.getLogger(__name__)

HMAC_ALGORITHMS = ["HS256", "HS384", "HS512"]
PUBLIC_KEY_ALGORITHMS = [
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
]
REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]


class JwtVerifier:
    """Turn a bearer JWT into a :class:`Principal`, or reject it."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.role_claim = settings.jwt_role_claim
        self.leeway = settings.jwt_leeway_s
        self._key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        self.algorithms = PUBLIC_KEY_ALGORITHMS
        if settings.jwt_secret is not None:
            self._key = settings.jwt_secret.get_secret_value()
            self.algorithms = HMAC_ALGORITHMS
        elif settings.jwt_public_key_file is not None:
            self._key = settings.jwt_public_key_file.read_text()
        elif settings.jwt_jwks_file is not None:
            self._jwks = jwt.PyJWKSet.from_json(settings.jwt_jwks_file.read_text())

    @property
    def enabled(self) -> bool:
        return self._key is not None or self._jwks is not None

    def verify(self, token: str) -> Principal:
        """Validate ``token``; raise Unauthenticated, or Forbidden without a role."""
        if not self.enabled:
            raise Unauthenticated(
                "Credential is not a valid API key.", code="invalid_credential"
            )
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            logger.info("jwt_rejected", extra={"error": type(exc).__name__})
            raise Unauthenticated(
                f"JWT is invalid: {exc}.", code="invalid_credential"
            ) from None
        return Principal(
            kind="jwt",
            subject=str(claims["sub"])[:128],
            role=self._role(claims),
            name=str(claims.get("name", ""))[:128],
        )

    def _key_for(self, token: str) -> Any:
        if self._jwks is None:
            return self._key
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str):
            raise jwt.InvalidTokenError("the header has no 'kid'")
        try:
            return self._jwks[kid]
        except KeyError:
            raise jwt.InvalidTokenError(
                f"no key with kid {kid!r} in the JWKS"
            ) from None

    def _role(self, claims: dict[str, Any]) -> Role:
        value = claims.get(self.role_claim)
        names = value if isinstance(value, list) else [value]
        known = {role.value for role in Role}
        roles = [
            Role(name) for name in names if isinstance(name, str) and name in known
        ]
        if not roles:
            raise Forbidden(
                f"JWT has no fleethub role in claim {self.role_claim!r}.",
                code="missing_role",
            )
        return max(roles, key=lambda role: role.rank)
