"""Attach the security middleware, admin routes and OpenAPI schemes to an app."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from fleethub.security.audit import AuditMiddleware
from fleethub.security.middleware import SecurityMiddleware
from fleethub.security.policy import AccessPolicy
from fleethub.security.routes import router
from fleethub.settings import Settings

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (fhk_...) or a JWT from the identity provider.",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def install_security(app: FastAPI, settings: Settings) -> None:
    """Protect every route of ``app``, including routes added after this call.

    Middleware added later wraps earlier middleware, so the order is, from the
    outside in: CORS (handles preflight requests, which carry no credential),
    audit (sees the final status of every request), then the security checks.
    """
    app.include_router(router)
    app.add_middleware(SecurityMiddleware, settings=settings)
    app.add_middleware(AuditMiddleware)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    _document_security(app, AccessPolicy(settings))


def _document_security(app: FastAPI, policy: AccessPolicy) -> None:
    """Add the security schemes to the OpenAPI description, and mark public routes."""
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build_schema()
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        schema["security"] = [{"bearer": []}, {"apiKey": []}]
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                _document_operation(
                    operation, policy.for_http(method.upper(), path).public
                )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_operation(operation: dict[str, Any], public: bool) -> None:
    if public:
        operation["security"] = []
        return
    responses = operation.setdefault("responses", {})
    responses.setdefault("401", {"description": "Missing or invalid credential."})
    responses.setdefault("403", {"description": "The credential's role is too low."})
    responses.setdefault(
        "429", {"description": "Rate limit exceeded; see Retry-After."}
    )
