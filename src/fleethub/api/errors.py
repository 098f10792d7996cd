"""Map errors to the JSON body every fleethub endpoint returns on failure.

The body is ``{"error": code, "message": ..., "details": {...}}`` for every
status, including request validation (422) and unexpected errors (500, with
a request id and nothing internal).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from fleethub.errors import FleethubError

logger = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The JSON body of every error response."""

    error: str
    message: str
    details: dict[str, Any] = {}


ERROR_DESCRIPTIONS = {
    400: "Invalid input: error `invalid_input` or a more specific code.",
    404: "Not found: error `not_found`.",
    409: "Conflict with the current state: error `conflict` or more specific.",
    422: "Request does not match the schema: error `invalid_request`.",
    500: "Unexpected error: `internal_error` with `details.request_id`.",
    503: "A dependency is unavailable or the server is overloaded; retry later.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting the error body."""
    return {
        status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def _body(
    code: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"error": code, "message": message, "details": details or {}}


async def _fleethub_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FleethubError)
    return JSONResponse(exc.to_dict(), status_code=exc.status_code)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"location": list(map(str, err.get("loc", ()))), "message": err.get("msg", "")}
        for err in exc.errors()
    ]
    return JSONResponse(
        _body("invalid_request", "Request is invalid.", {"problems": problems}),
        status_code=422,
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    return JSONResponse(
        _body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    logger.exception(
        "unexpected_error", extra={"request_id": request_id, "path": request.url.path}
    )
    # This response skips the request middleware, so it sets the header itself.
    return JSONResponse(
        _body("internal_error", "Internal server error.", {"request_id": request_id}),
        status_code=500,
        headers={"X-Request-ID": request_id},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that produce :class:`ErrorBody` responses."""
    app.add_exception_handler(FleethubError, _fleethub_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


def document_error_responses(app: FastAPI) -> None:
    """Describe :class:`ErrorBody` as the body of every route's 422, 500 and 503.

    FastAPI documents validation errors with its own schema, but this app
    returns them as :class:`ErrorBody`. Any route can fail with a 500, and any
    ``/api`` route with a 503 when storage is unavailable.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_error_bodies(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _with_error_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    ref_template = "#/components/schemas/{model}"
    body_schema = ErrorBody.model_json_schema(ref_template=ref_template)
    schemas.setdefault("ErrorBody", body_schema)
    ref = {"$ref": ref_template.format(model="ErrorBody")}
    content = {"application/json": {"schema": ref}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = _error_response(422, content)
            responses.setdefault("500", _error_response(500, content))
            # Every /api route reads storage, which can be unavailable.
            if path.startswith("/api/"):
                responses.setdefault("503", _error_response(503, content))
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return schema


def _error_response(status: int, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": ERROR_DESCRIPTIONS[status], "content": content}
