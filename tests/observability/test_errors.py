"""Every error path returns the documented body and status."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import httpx
import pytest

from fleethub.cli.server import RunningServer
from fleethub.logs import build_handler

ERROR_KEYS = {"error", "message", "details"}


async def _boom() -> dict[str, str]:
    raise RuntimeError("secret internals: password=hunter2")


@pytest.fixture
def failing_route(server: RunningServer) -> str:
    server.app.add_api_route("/test/boom", _boom, methods=["GET"])
    return "/test/boom"


def _documented(openapi: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return openapi["paths"][path][method]["responses"]


CASES = [
    (
        "get",
        "/api/robots/bad%20id!/state",
        None,
        400,
        "invalid_robot_id",
        "/api/robots/{robot_id}/state",
    ),
    (
        "get",
        "/api/robots/nobody/state",
        None,
        404,
        "not_found",
        "/api/robots/{robot_id}/state",
    ),
    (
        "get",
        "/api/robots/nobody/health",
        None,
        404,
        "not_found",
        "/api/robots/{robot_id}/health",
    ),
    (
        "get",
        "/api/robots/nobody/telemetry?limit=0",
        None,
        422,
        "invalid_request",
        "/api/robots/{robot_id}/telemetry",
    ),
    (
        "get",
        "/api/events?start=2026-01-01T00:00:00",
        None,
        400,
        "timestamp_missing_timezone",
        "/api/events",
    ),
    (
        "post",
        "/api/robots/nobody/commands",
        {"type": ""},
        400,
        "invalid_command_type",
        "/api/robots/{robot_id}/commands",
    ),
]


@pytest.mark.parametrize(("method", "url", "body", "status", "code", "template"), CASES)
async def test_error_body_is_documented(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    status: int,
    code: str,
    template: str,
) -> None:
    """The error body has the three documented keys and its status is in OpenAPI."""
    response = await http.request(method, url, json=body)
    openapi = (await http.get("/openapi.json")).json()

    assert response.status_code == status
    assert set(response.json()) == ERROR_KEYS
    assert response.json()["error"] == code
    responses = _documented(openapi, template, method)
    assert str(status) in responses
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ErrorBody"}


async def test_conflict_for_reused_idempotency_key(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """An idempotency key reused for a different command is a documented 409."""
    await server.app.state.services.storage.ensure_robot("parked", _now())
    first = {"type": "stop", "idempotency_key": "k-1"}
    second = {"type": "charge", "idempotency_key": "k-1"}
    queued = await http.post("/api/robots/parked/commands", json=first)
    response = await http.post("/api/robots/parked/commands", json=second)
    openapi = (await http.get("/openapi.json")).json()

    assert queued.status_code == 202
    assert response.status_code == 409
    assert set(response.json()) == ERROR_KEYS
    assert response.json()["error"] == "idempotency_key_reused"
    assert "409" in _documented(openapi, "/api/robots/{robot_id}/commands", "post")


async def test_unknown_path_and_method(http: httpx.AsyncClient) -> None:
    """Routing errors use the same body."""
    missing = await http.get("/api/nothing-here")
    wrong_method = await http.delete("/healthz")

    assert missing.status_code == 404
    assert set(missing.json()) == ERROR_KEYS
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"


async def test_unexpected_error_hides_internals(
    http: httpx.AsyncClient, failing_route: str
) -> None:
    """A crash returns 500 with its request id and no internals, and logs the trace."""
    stream = io.StringIO()
    handler = build_handler("json", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        response = await http.get(failing_route, headers={"X-Request-ID": "crash-42"})
    finally:
        root.removeHandler(handler)

    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "crash-42"
    assert response.json() == {
        "error": "internal_error",
        "message": "Internal server error.",
        "details": {"request_id": "crash-42"},
    }
    assert "hunter2" not in response.text
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    crash = [line for line in lines if line["event"] == "unexpected_error"]
    assert len(crash) == 1
    assert crash[0]["request_id"] == "crash-42"
    assert "RuntimeError" in crash[0]["exception"]


async def test_every_operation_documents_500(http: httpx.AsyncClient) -> None:
    """Every operation lists the 500 error body, and 422 uses it where present."""
    openapi = (await http.get("/openapi.json")).json()
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert responses["500"]["content"]["application/json"]["schema"] == ref, (
                path,
                method,
            )
            if "422" in responses:
                assert responses["422"]["content"]["application/json"]["schema"] == ref
    assert "HTTPValidationError" not in openapi["components"]["schemas"]


def _now():
    from fleethub.models import utcnow

    return utcnow()
