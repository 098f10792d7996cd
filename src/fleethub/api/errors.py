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


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting the error body."""
    return {status: {"model": ErrorBody} for status in statuses}


def _body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
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
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        _body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    logger.exception(
        "unexpected_error", extra={"request_id": request_id, "path": request.url.path}
    )
    return JSONResponse(
        _body("internal_error", "Internal server error.", {"request_id": request_id}),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that produce :class:`ErrorBody` responses."""
    app.add_exception_handler(FleethubError, _fleethub_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
