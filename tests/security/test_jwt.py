"""JWTs from an identity provider: HMAC secret, PEM public key and JWKS file."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from fleethub.cli.server import running_server
from security.support import secure_settings

ISSUER = "https://idp.example.test"
AUDIENCE = "fleethub"
SECRET = "a-test-secret-that-is-at-least-32-bytes-long"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": now + 300,
        "iat": now,
        "role": "operator",
    } | overrides


@pytest.fixture
async def hmac_http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = secure_settings(
        tmp_path, jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    async with running_server(settings, migrate_schema=True) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_hmac_jwt_grants_its_role(hmac_http: httpx.AsyncClient) -> None:
    """A valid HS256 token with role operator may read and send commands, not admin."""
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert (
        await hmac_http.get("/api/robots", headers=bearer(token))
    ).status_code == 200
    command = await hmac_http.post(
        "/api/robots/r1/commands", json={"type": "stop"}, headers=bearer(token)
    )
    assert command.status_code == 404
    assert (await hmac_http.get("/api/keys", headers=bearer(token))).status_code == 403


async def test_highest_role_in_list_counts(hmac_http: httpx.AsyncClient) -> None:
    """A role claim listing several roles grants the highest known one."""
    token = jwt.encode(
        claims(role=["viewer", "admin", "pilot"]), SECRET, algorithm="HS256"
    )
    assert (await hmac_http.get("/api/keys", headers=bearer(token))).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"exp": int(time.time()) - 3600}, 401),
        ({"aud": "someone-else"}, 401),
        ({"iss": "https://evil.example.test"}, 401),
        ({"sub": None}, 401),
        ({"role": "superuser"}, 403),
        ({"role": None}, 403),
    ],
)
async def test_invalid_jwts_are_rejected(
    hmac_http: httpx.AsyncClient, overrides: dict[str, Any], status: int
) -> None:
    """Expired, foreign, subject-less and role-less tokens are rejected."""
    payload = {
        key: value for key, value in claims(**overrides).items() if value is not None
    }
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    response = await hmac_http.get("/api/robots", headers=bearer(token))
    assert response.status_code == status, response.text


async def test_wrong_secret_and_none_algorithm_rejected(
    hmac_http: httpx.AsyncClient,
) -> None:
    """A token signed with another secret, or unsigned, is rejected."""
    forged = jwt.encode(
        claims(), "another-secret-of-sufficient-length!!", algorithm="HS256"
    )
    unsigned = jwt.encode(claims(), None, algorithm="none")
    for token in (forged, unsigned):
        response = await hmac_http.get("/api/robots", headers=bearer(token))
        assert response.status_code == 401


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_jwks_file_selects_key_by_kid(tmp_path: Path) -> None:
    """RS256 tokens verify against the JWKS entry named by their kid."""
    key = _rsa_key()
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk | {"kid": "k1", "alg": "RS256"}]}))
    settings = secure_settings(
        tmp_path, jwt_jwks_file=jwks_file, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    good = jwt.encode(
        claims(role="viewer"), key, algorithm="RS256", headers={"kid": "k1"}
    )
    unknown = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k2"})
    other = jwt.encode(claims(), _rsa_key(), algorithm="RS256", headers={"kid": "k1"})
    async with running_server(settings, migrate_schema=True) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            assert (
                await http.get("/api/robots", headers=bearer(good))
            ).status_code == 200
            assert (
                await http.get("/api/robots", headers=bearer(unknown))
            ).status_code == 401
            assert (
                await http.get("/api/robots", headers=bearer(other))
            ).status_code == 401


async def test_public_key_rejects_hmac_confusion(tmp_path: Path) -> None:
    """An HS256 token signed with the PEM public key as secret is rejected."""
    key = _rsa_key()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem_file = tmp_path / "public.pem"
    pem_file.write_bytes(pem)
    settings = secure_settings(
        tmp_path, jwt_public_key_file=pem_file, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    good = jwt.encode(claims(), key, algorithm="RS256")
    async with running_server(settings, migrate_schema=True) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            assert (
                await http.get("/api/robots", headers=bearer(good))
            ).status_code == 200
            forged = _hmac_with(pem)
            assert (
                await http.get("/api/robots", headers=bearer(forged))
            ).status_code == 401


def _hmac_with(secret: bytes) -> str:
    """Sign like an attacker who uses the public key as an HMAC secret."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims(role="admin")).encode())
    signature = hmac.new(
        secret, f"{header}.{payload}".encode(), hashlib.sha256
    ).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_jwt_settings_need_issuer_and_audience() -> None:
    """A JWT key without issuer and audience is rejected at start-up."""
    with pytest.raises(ValueError, match="jwt_issuer and jwt_audience"):
        secure_settings(Path("/tmp"), jwt_secret=SECRET)
