"""The security part of the composition root: credentials, JWTs, limits, audit."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from fleethub.errors import Unauthenticated
from fleethub.security.audit import AuditLog
from fleethub.security.identity import JwtVerifier
from fleethub.security.policy import AccessPolicy
from fleethub.security.principals import Principal
from fleethub.security.ratelimit import RateLimiter, build_rate_limiter
from fleethub.security.store import CredentialStore
from fleethub.security.tokens import API_KEY, parse_token, token_matches
from fleethub.settings import Settings

logger = logging.getLogger(__name__)

MAX_CREDENTIAL_LENGTH = 8192


def invalid_credential() -> Unauthenticated:
    return Unauthenticated(
        "Credential is not a valid API key, robot credential or JWT, or it is revoked.",
        code="invalid_credential",
    )


class SecurityService:
    """Everything the middleware, the routes and the CLI need to check callers."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.credentials = CredentialStore(engine)
        self.audit = AuditLog(engine)
        self.jwt = JwtVerifier(settings)
        self.policy = AccessPolicy(settings)
        self.limiter: RateLimiter = build_rate_limiter(settings)

    async def authenticate(self, credential: str) -> Principal:
        """Return the caller a credential belongs to, or raise Unauthenticated.

        ``fhk_`` tokens are API keys, ``fhr_`` tokens robot credentials and
        anything with two dots a JWT.
        """
        if len(credential) > MAX_CREDENTIAL_LENGTH:
            raise invalid_credential()
        parsed = parse_token(credential)
        if parsed is None:
            if credential.count(".") == 2:
                return self.jwt.verify(credential)
            raise invalid_credential()
        if parsed.kind == API_KEY:
            return await self._api_key(credential, parsed.token_id)
        return await self._robot(credential, parsed.token_id)

    async def _api_key(self, credential: str, key_id: str) -> Principal:
        found = await self.credentials.find_api_key(key_id)
        if found is None or not token_matches(credential, found[1]):
            raise invalid_credential()
        info = found[0]
        return Principal(
            kind="api_key", subject=info.key_id, role=info.role, name=info.name
        )

    async def _robot(self, credential: str, credential_id: str) -> Principal:
        found = await self.credentials.find_robot_credential(credential_id)
        if found is None or not token_matches(credential, found[1]):
            raise invalid_credential()
        robot_id = found[0].robot_id
        return Principal(kind="robot", subject=robot_id, role=None, robot_id=robot_id)

    async def close(self) -> None:
        await self.limiter.close()
