"""Webhooks: register endpoints that receive signed events, and read deliveries."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Path, Query, Response
from pydantic import AnyHttpUrl, BaseModel, Field, field_validator

from fleethub.api.deps import ServicesDep
from fleethub.api.errors import error_responses
from fleethub.api.params import MAX_ROW_ID
from fleethub.models import Severity
from fleethub.storage.events_sql import Webhook
from fleethub.stream.filters import MAX_FILTER_ITEMS, EventTypeName

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

WebhookId = Annotated[str, Path(max_length=36)]


class WebhookRequest(BaseModel):
    """A webhook: where to post, which events, and the signing secret."""

    url: AnyHttpUrl = Field(description="http:// or https:// URL that receives POSTs.")
    event_types: list[EventTypeName] = Field(
        default_factory=list, max_length=MAX_FILTER_ITEMS, description="Empty: all."
    )
    severities: list[Severity] = Field(default_factory=list, description="Empty: all.")
    secret: str | None = Field(
        None,
        min_length=16,
        max_length=256,
        description="HMAC-SHA256 key for the signature header; generated if missing.",
    )

    # NOTE: any host is accepted, private addresses included, so a client allowed
    # to register webhooks can make the server send requests inside its network.
    @field_validator("url")
    @classmethod
    def _http_only(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("URL must be http:// or https:// with a host.")
        return url


def _public(webhook: Webhook, services: Any) -> dict[str, Any]:
    """Return the webhook without its secret, with its breaker state."""
    body = msgspec.to_builtins(webhook)
    del body["secret"]
    circuit = services.webhooks.circuit(webhook.webhook_id)
    body["circuit"] = {"state": circuit.state, "times_opened": circuit.times_opened}
    return body


@router.post("", status_code=201, responses=error_responses(422))
async def create_webhook(body: WebhookRequest, services: ServicesDep) -> dict[str, Any]:
    """Register a webhook; the response is the only place the secret is shown."""
    webhook = await services.webhooks.create(
        str(body.url),
        list(body.event_types),
        [severity.value for severity in body.severities],
        body.secret,
    )
    return {**_public(webhook, services), "secret": webhook.secret}


@router.get("")
async def list_webhooks(services: ServicesDep) -> list[dict[str, Any]]:
    """List the webhooks with their breaker state."""
    return [_public(webhook, services) for webhook in services.webhooks.all()]


@router.get("/{webhook_id}", responses=error_responses(404))
async def get_webhook(webhook_id: WebhookId, services: ServicesDep) -> dict[str, Any]:
    """Return one webhook with its breaker state."""
    return _public(services.webhooks.get(webhook_id), services)


@router.delete("/{webhook_id}", status_code=204, responses=error_responses(404))
async def delete_webhook(webhook_id: WebhookId, services: ServicesDep) -> Response:
    """Delete a webhook and drop its undelivered events."""
    await services.webhooks.delete(webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", responses=error_responses(404))
async def list_deliveries(
    webhook_id: WebhookId,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
) -> dict[str, Any]:
    """Return the webhook's delivery attempts, newest first."""
    services.webhooks.get(webhook_id)
    limit = min(limit, services.settings.max_page_size)
    items = await services.webhooks.store.deliveries(webhook_id, limit, before_id)
    next_before = items[-1].id if len(items) == limit else None
    return {"items": msgspec.to_builtins(items), "next_before_id": next_before}
