"""API keys and robot credentials: generation, parsing and hashing.

A token reads ``<kind>_<id>_<secret>``: ``kind`` is ``fhk`` for an API key or
``fhr`` for a robot credential, ``id`` is 12 public hex characters that name
the row to look up, and ``secret`` carries 256 random bits. Only the SHA-256
digest of the whole token is stored. A slow password hash would add nothing
because the secret is random rather than chosen by a person, so it cannot be
guessed from a dictionary.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

TokenKind = Literal["fhk", "fhr"]
API_KEY: TokenKind = "fhk"
ROBOT_CREDENTIAL: TokenKind = "fhr"

_TOKEN = re.compile(
    r"(?P<kind>fhk|fhr)_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})"
)


@dataclass(frozen=True)
class IssuedToken:
    """A freshly generated token; ``token`` is shown once and never stored."""

    token_id: str
    token: str
    digest: str


@dataclass(frozen=True)
class ParsedToken:
    """The public parts of a well-formed token."""

    kind: TokenKind
    token_id: str


def issue_token(kind: TokenKind) -> IssuedToken:
    """Generate a new random token of ``kind``."""
    token_id = secrets.token_hex(6)
    token = f"{kind}_{token_id}_{secrets.token_urlsafe(32)}"
    return IssuedToken(token_id=token_id, token=token, digest=digest_token(token))


def parse_token(token: str) -> ParsedToken | None:
    """Return the kind and id of a well-formed token, or None."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    kind: TokenKind = API_KEY if match["kind"] == API_KEY else ROBOT_CREDENTIAL
    return ParsedToken(kind=kind, token_id=match["id"])


def digest_token(token: str) -> str:
    """Return the hex SHA-256 digest stored in place of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_digest: str) -> bool:
    """Compare ``token`` with a stored digest in constant time."""
    return hmac.compare_digest(digest_token(token), stored_digest)
