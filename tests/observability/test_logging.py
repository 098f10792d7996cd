"""Log lines carry their ids; rejected input cannot flood the log."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from fleethub.cli.server import RunningServer, running_server
from fleethub.logs import build_handler, log_context
from fleethub.observability.rejections import ErrorCounts, RejectionLog

from .conftest import sample, scrape, send_raw_frames, sqlite_settings


def _parse(handler_stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in handler_stream.getvalue().splitlines()]


async def test_robot_link_lines_carry_ids(tmp_path: Path) -> None:
    """Lines logged for a robot link carry its request id, robot id and component."""
    stream = io.StringIO()
    handler = build_handler("json", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    try:
        settings = sqlite_settings(tmp_path, rejected_log_lines_per_interval=3)
        async with running_server(settings, migrate_schema=True) as server:
            await send_raw_frames(
                server, "logbot", ["{"] * 20, headers={"X-Request-ID": "link-7"}
            )
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                suppressed = sample(
                    await scrape(http), "fleethub_rejected_log_lines_suppressed_total"
                )
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    lines = _parse(stream)

    connected = [line for line in lines if line["event"] == "robot_connected"]
    assert len(connected) == 1
    assert connected[0]["request_id"] == "link-7"
    assert connected[0]["robot_id"] == "logbot"
    assert connected[0]["component"] == "robot_link"
    rejected = [line for line in lines if line["event"] == "robot_input_rejected"]
    assert len(rejected) == 3
    assert {line["robot_id"] for line in rejected} == {"logbot"}
    assert {line["request_id"] for line in rejected} == {"link-7"}
    assert {line["code"] for line in rejected} == {"invalid_json"}
    assert suppressed == 17
    summaries = [
        line for line in lines if line["event"] == "robot_input_rejected_suppressed"
    ]
    assert len(summaries) == 1
    assert summaries[0]["suppressed"] == 17


def test_context_fields_in_console_lines() -> None:
    """The console format prints bound context fields too."""
    stream = io.StringIO()
    handler = build_handler("console", stream)
    logger = logging.getLogger("fleethub.test.console")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with log_context(request_id="abc", component="api"):
            logger.info("something_happened", extra={"robot_id": "r1"})
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, second = stream.getvalue().splitlines()

    assert "request_id='abc'" in first
    assert "component='api'" in first
    assert "robot_id='r1'" in first
    assert "request_id" not in second


def test_explicit_extra_wins_over_context() -> None:
    """An ``extra`` field overrides the bound field of the same name."""
    stream = io.StringIO()
    handler = build_handler("json", stream)
    logger = logging.getLogger("fleethub.test.override")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with log_context(robot_id="bound"):
            logger.info("event", extra={"robot_id": "explicit"})
    finally:
        logger.removeHandler(handler)

    assert json.loads(stream.getvalue())["robot_id"] == "explicit"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rejection_budget_renews_each_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each interval allows N lines per robot; the overflow is summarised once."""
    clock = FakeClock()
    log = RejectionLog(2, 60.0, ErrorCounts(3600.0, clock), clock)
    caplog.set_level(logging.WARNING, logger="fleethub.observability.rejections")

    with log_context(robot_id="noisy"):
        for _ in range(5):
            log.record("invalid_json")
    with log_context(robot_id="quiet"):
        log.record("too_many_beams")
    clock.now += 61
    log.flush_due()
    with log_context(robot_id="noisy"):
        log.record("invalid_json")

    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("robot_input_rejected") == 4
    summaries = [
        r for r in caplog.records if r.getMessage() == "robot_input_rejected_suppressed"
    ]
    assert len(summaries) == 1
    assert summaries[0].robot_id == "noisy"
    assert summaries[0].suppressed == 3
    assert log.suppressed_total == 3


def test_error_counts_expire_after_window() -> None:
    """Errors older than the window no longer count."""
    clock = FakeClock()
    counts = ErrorCounts(600.0, clock)
    counts.add("r1", "invalid_json")
    counts.add("r1", "invalid_json")
    counts.add("r1", "too_many_beams")

    assert counts.counts("r1") == {"invalid_json": 2, "too_many_beams": 1}
    clock.now += 601
    assert counts.counts("r1") == {}
    assert counts.counts("never-seen") == {}


async def test_request_id_echoed_or_generated(http: httpx.AsyncClient) -> None:
    """A safe X-Request-ID is returned as sent; a missing or unsafe one is replaced."""
    echoed = await http.get("/healthz", headers={"X-Request-ID": "abc-123"})
    generated = await http.get("/healthz")
    unsafe = await http.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})

    assert echoed.headers["X-Request-ID"] == "abc-123"
    assert len(generated.headers["X-Request-ID"]) == 32
    assert unsafe.headers["X-Request-ID"] != "bad id\twith spaces"
    assert len(unsafe.headers["X-Request-ID"]) == 32


async def test_websocket_handshake_returns_request_id(server: RunningServer) -> None:
    """The WebSocket handshake response carries the connection's request id."""
    url = f"{server.ws_url}/ws/robots/handshake-bot"
    headers = {"X-Request-ID": "ws-handshake-1"}
    async with websockets.connect(url, additional_headers=headers) as socket:
        await socket.recv()
        assert socket.response.headers["X-Request-ID"] == "ws-handshake-1"
