"""Rules: list, create, replace and delete the declarative alert rules."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from fleethub.api.deps import ServicesDep
from fleethub.api.errors import error_responses
from fleethub.errors import InvalidInput
from fleethub.rules.model import Rule

router = APIRouter(prefix="/api/rules", tags=["rules"])


def _body(rule: Rule) -> dict[str, Any]:
    return rule.model_dump(mode="json")


@router.get("")
async def list_rules(services: ServicesDep) -> list[dict[str, Any]]:
    """List every rule in evaluation order."""
    return [_body(rule) for rule in services.rules.engine.rules]


@router.get("/{rule_id}", responses=error_responses(404))
async def get_rule(rule_id: str, services: ServicesDep) -> dict[str, Any]:
    """Return one rule."""
    return _body(services.rules.require_rule(rule_id))


@router.post("", status_code=201, responses=error_responses(409, 422))
async def create_rule(rule: Rule, services: ServicesDep) -> dict[str, Any]:
    """Add a rule; its id must be new."""
    rule = rule.with_default_timeout(services.settings.offline_after_s)
    return _body(await services.rules.create_rule(rule))


@router.put("/{rule_id}", responses=error_responses(400, 404, 422))
async def replace_rule(
    rule_id: str, rule: Rule, services: ServicesDep
) -> dict[str, Any]:
    """Replace a rule; the id in the body must match the path."""
    if rule.id != rule_id:
        raise InvalidInput(
            f"Rule id {rule.id!r} in the body does not match {rule_id!r} in the path.",
            code="rule_id_mismatch",
        )
    rule = rule.with_default_timeout(services.settings.offline_after_s)
    return _body(await services.rules.replace_rule(rule))


@router.delete("/{rule_id}", status_code=204, responses=error_responses(404))
async def delete_rule(rule_id: str, services: ServicesDep) -> Response:
    """Delete a rule; its open alerts stay until acknowledged."""
    await services.rules.delete_rule(rule_id)
    return Response(status_code=204)
