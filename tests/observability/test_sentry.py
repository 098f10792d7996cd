"""Unexpected errors reach Sentry with the request id and without credentials."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleethub.cli.server import running_server

from .conftest import sqlite_settings, wait_for

SECRET = "Bearer do-not-leak-4711"
QUERY_SECRET = "query-secret-0815"


class EnvelopeSink:
    """A local HTTP endpoint that stores every Sentry envelope posted to it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self.received = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                sink.paths.append(self.path)
                sink.bodies.append(
                    _decompress(raw, self.headers.get("Content-Encoding"))
                )
                sink.received.set()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"

    def events(self) -> list[dict[str, Any]]:
        """Return the error events among the envelopes received so far."""
        found = []
        for body in list(self.bodies):
            lines = body.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found


def _decompress(raw: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]

        return brotli.decompress(raw)
    return raw


@pytest.fixture
def sink() -> Iterator[EnvelopeSink]:
    sink = EnvelopeSink()
    sink.thread.start()
    try:
        yield sink
    finally:
        sink.server.shutdown()
        sink.server.server_close()


async def _boom() -> dict[str, str]:
    raise RuntimeError("sentry test failure")


async def test_sentry_receives_scrubbed_event(
    tmp_path: Path, sink: EnvelopeSink
) -> None:
    """An unexpected error is sent with its request id and no credentials."""
    settings = sqlite_settings(tmp_path, sentry_dsn=sink.dsn, sentry_environment="test")
    async with running_server(settings, migrate_schema=True) as server:
        server.app.add_api_route("/test/boom", _boom, methods=["GET"])
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            response = await http.get(
                f"/test/boom?token={QUERY_SECRET}",
                headers={
                    "Authorization": SECRET,
                    "Cookie": "session=abc",
                    "X-Request-ID": "sentry-req-1",
                },
            )

            async def event_arrived() -> bool:
                return bool(sink.events())

            await wait_for(event_arrived)

    assert response.status_code == 500
    events = sink.events()
    assert all(path == "/api/1/envelope/" for path in sink.paths)
    assert {event["tags"]["request_id"] for event in events} == {"sentry-req-1"}
    assert events[0]["environment"] == "test"
    for body in sink.bodies:
        assert SECRET.encode() not in body
        assert b"do-not-leak" not in body
        assert QUERY_SECRET.encode() not in body
    with_request = [event for event in events if "request" in event]
    assert with_request, "no event carried request data"
    for event in with_request:
        headers = {name.lower() for name in event["request"].get("headers", {})}
        assert "authorization" not in headers
        assert "cookie" not in headers
        assert "query_string" not in event["request"]
    assert all("sys.argv" not in event.get("extra", {}) for event in events)
