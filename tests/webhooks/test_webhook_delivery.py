"""Tests for webhook delivery to a real HTTP server started by each test."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from fleethub.cli.server import RunningServer, running_server
from fleethub.client.robot import RobotClient
from fleethub.testing import StateFactory, server_settings, wait_until

SECRET = "a-test-secret-of-some-length"
FAST_RETRIES = {
    "webhook_backoff_initial_s": 0.01,
    "webhook_backoff_max_s": 0.05,
    "webhook_retry_pause_s": 0.05,
}


class Receiver:
    """An HTTP endpoint that records requests and fails the first ``failures``."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        if len(self.requests) <= self.failures:
            return web.Response(status=500, text="failing on purpose")
        return web.Response(status=204)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def delivered(self) -> list[dict[str, Any]]:
        """Return the bodies of requests that got a success response."""
        return [json.loads(body) for _, body in self.requests[self.failures :]]


@contextlib.asynccontextmanager
async def receiver(failures: int = 0) -> AsyncIterator[Receiver]:
    target = Receiver(failures)
    await target.start()
    try:
        yield target
    finally:
        await target.stop()


async def add_webhook(
    http: httpx.AsyncClient, url: str, **fields: Any
) -> dict[str, Any]:
    body = {"url": url, "secret": SECRET, "event_types": ["battery_low"], **fields}
    response = await http.post("/api/webhooks", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def deliveries(http: httpx.AsyncClient, webhook_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/api/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["items"]))


async def raise_battery_low(server: RunningServer, robot_id: str = "r1") -> None:
    state = StateFactory()
    async with RobotClient(server.ws_url, robot_id) as robot:
        await robot.send_state(state(battery=10.0))
        await robot.flush(5.0)


def outcomes(items: list[dict[str, Any]]) -> list[str]:
    return [item["outcome"] for item in items]


async def test_delivery_is_signed(tmp_path: Path) -> None:
    """A matching event is posted once with a valid HMAC-SHA256 signature."""
    settings = server_settings(tmp_path)
    async with (
        receiver() as target,
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        hook = await add_webhook(http, target.url)
        critical_only = await add_webhook(http, target.url, severities=["critical"])
        await raise_battery_low(server)
        await wait_until(lambda: target.requests)
        [delivery] = await wait_until(lambda: deliveries(http, hook["webhook_id"]))
        listed = (await http.get("/api/webhooks")).json()
        skipped = await deliveries(http, critical_only["webhook_id"])

    [(headers, body)] = target.requests
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    event = json.loads(body)
    assert headers["X-Fleethub-Signature"] == f"sha256={expected}"
    assert headers["X-Fleethub-Event-Id"] == event["event_id"]
    assert event["type"] == "battery_low"
    assert event["robot_id"] == "r1"
    assert delivery["outcome"] == "delivered"
    assert delivery["status_code"] == 204
    assert skipped == []
    assert all("secret" not in item for item in listed)


async def test_failed_delivery_is_retried(tmp_path: Path, database_url: str) -> None:
    """Two failures are retried with back-off and the third attempt delivers."""
    settings = server_settings(tmp_path, database_url=database_url, **FAST_RETRIES)
    async with (
        receiver(failures=2) as target,
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        hook = await add_webhook(http, target.url)
        await raise_battery_low(server)
        items = await wait_until(
            lambda: _with_outcome(deliveries(http, hook["webhook_id"]), "delivered")
        )
        counted = server.app.state.services.metrics.registry.get_sample_value

    assert counted("fleethub_webhook_deliveries_total", {"outcome": "failure"}) == 2
    assert counted("fleethub_webhook_deliveries_total", {"outcome": "success"}) == 1
    assert counted("fleethub_webhook_failures_total", {"reason": "status"}) == 2
    assert outcomes(items) == ["failed", "failed", "delivered"]
    assert [item["attempt"] for item in items] == [1, 2, 3]
    assert items[0]["status_code"] == 500
    assert len(target.requests) == 3
    bodies = {body for _, body in target.requests}
    assert len(bodies) == 1


async def _with_outcome(pending: Any, outcome: str) -> list[dict[str, Any]] | None:
    items = await pending
    return items if outcome in outcomes(items) else None


async def test_breaker_opens_and_closes(tmp_path: Path) -> None:
    """Failures open the breaker, which stops requests until a trial succeeds."""
    settings = server_settings(
        tmp_path,
        webhook_breaker_threshold=3,
        webhook_breaker_reset_s=0.2,
        webhook_max_attempts=5,
        **FAST_RETRIES,
    )
    async with (
        receiver(failures=3) as target,
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        hook = await add_webhook(http, target.url)
        await raise_battery_low(server)
        items = await wait_until(
            lambda: _with_outcome(deliveries(http, hook["webhook_id"]), "delivered")
        )
        status = (await http.get(f"/api/webhooks/{hook['webhook_id']}")).json()

    seen = outcomes(items)
    assert seen[:4] == ["failed", "failed", "failed", "circuit_open"]
    assert seen[-1] == "delivered"
    assert set(seen[4:-1]) <= {"circuit_open"}
    assert len(target.requests) == 4
    assert status["circuit"] == {"state": "closed", "times_opened": 1}
    assert len(target.delivered()) == 1


async def test_undelivered_event_survives_restart(
    tmp_path: Path, database_url: str
) -> None:
    """An event not delivered before a stop is delivered after the restart."""
    settings = server_settings(
        tmp_path,
        database_url=database_url,
        webhook_max_attempts=1,
        webhook_retry_pause_s=60,
    )
    async with receiver() as probe:
        url = probe.url
        port = probe.port
    async with (
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        hook = await add_webhook(http, url)
        await raise_battery_low(server)
        [failed] = await wait_until(lambda: deliveries(http, hook["webhook_id"]))
    target = Receiver()
    target.port = port
    await target.start()
    try:
        async with (
            running_server(settings) as server,
            httpx.AsyncClient(base_url=server.http_url) as http,
        ):
            await wait_until(lambda: target.requests)
            items = await wait_until(
                lambda: _with_outcome(deliveries(http, hook["webhook_id"]), "delivered")
            )
    finally:
        await target.stop()

    [event] = target.delivered()
    assert failed["outcome"] == "failed"
    assert "ConnectError" in failed["error"]
    assert event["type"] == "battery_low"
    assert event["event_id"] == failed["event_id"]
    assert outcomes(items) == ["failed", "delivered"]
    assert items[1]["attempt"] == 2


async def test_webhook_requests_are_validated(tmp_path: Path) -> None:
    """Bad URLs, short secrets and unknown severities are rejected with 422."""
    bad_bodies = [
        {"url": "ftp://127.0.0.1/hook"},
        {"url": "not a url"},
        {"url": "http://127.0.0.1/hook", "secret": "short"},
        {"url": "http://127.0.0.1/hook", "severities": ["loud"]},
        {"url": "http://127.0.0.1/hook", "event_types": ["bad type"]},
    ]
    async with (
        running_server(server_settings(tmp_path), migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        responses = [await http.post("/api/webhooks", json=body) for body in bad_bodies]
        created = await http.post("/api/webhooks", json={"url": "http://127.0.0.1:9/x"})
        webhook_id = created.json()["webhook_id"]
        deleted = await http.delete(f"/api/webhooks/{webhook_id}")
        again = await http.delete(f"/api/webhooks/{webhook_id}")
        deliveries_after_delete = await http.get(
            f"/api/webhooks/{webhook_id}/deliveries"
        )

    for response in responses:
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_request"
    assert created.status_code == 201
    assert len(created.json()["secret"]) >= 32
    assert deleted.status_code == 204
    assert again.status_code == 404
    assert deliveries_after_delete.status_code == 404


async def test_rule_can_turn_webhooks_off(tmp_path: Path) -> None:
    """A rule with webhooks = false keeps its events from every webhook."""
    rule = {
        "id": "battery_low",
        "field": "battery",
        "comparison": "lt",
        "threshold": 20.0,
        "actions": {"webhooks": False},
    }
    async with (
        receiver() as target,
        running_server(server_settings(tmp_path), migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        replaced = await http.put("/api/rules/battery_low", json=rule)
        await add_webhook(http, target.url, event_types=[])
        await raise_battery_low(server)
        await wait_until(
            lambda: "robot_disconnected" in [e["type"] for e in target.delivered()]
        )

    types = [event["type"] for event in target.delivered()]
    assert replaced.status_code == 200
    assert types == ["robot_connected", "robot_disconnected"]


async def test_old_undelivered_events_expire(tmp_path: Path) -> None:
    """Outbox rows older than webhook_max_age_s are dropped and recorded."""
    settings = server_settings(tmp_path, webhook_max_age_s=0.001)
    async with (
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        hook = await add_webhook(http, "http://127.0.0.1:9/unreachable")
        await raise_battery_low(server)
        [expired] = await wait_until(lambda: deliveries(http, hook["webhook_id"]))

    assert expired["outcome"] == "expired"
    assert expired["attempt"] == 0
