"""Bad input on the robot WebSocket, against a real server over real sockets.

Every case follows the same script. One valid state is stored first, and the
bad frame gets an ``error`` frame with a stable code. The connection stays
open, and a following valid state is acknowledged and stored after the first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets

from fleethub.cli.server import RunningServer, running_server
from fleethub.settings import Settings
from support import (
    RobotSocket,
    base_time,
    count_telemetry,
    fetch_telemetry,
    iso,
    make_settings,
    make_state,
    open_robot_socket,
    state_frame,
)

ROBOT = "robot-1"
MAX_FRAME_BYTES = 2048
MAX_LIDAR_BEAMS = 16
# uvicorn closes the socket (1009) above this; fleethub sets it from the settings.
HARD_FRAME_LIMIT = MAX_FRAME_BYTES * 4

T0 = base_time()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path, max_frame_bytes=MAX_FRAME_BYTES, max_lidar_beams=MAX_LIDAR_BEAMS
    )


# The table-driven cases share one server, because starting and stopping one
# per case dominated the run time. Each case uses its own robot id.
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[RunningServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("bad-input"),
        max_frame_bytes=MAX_FRAME_BYTES,
        max_lidar_beams=MAX_LIDAR_BEAMS,
    )
    async with running_server(settings, migrate_schema=True) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_http(shared_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=shared_server.http_url) as client:
        yield client


def with_number(state: dict[str, Any], token: str) -> str:
    """Return ``state`` as frame text with ``velocity.linear`` set to ``token``."""
    state["velocity"]["linear"] = "__NUMBER__"
    return json.dumps(state_frame(2, state)).replace('"__NUMBER__"', token)


def without(state: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in state.items() if name != key}


def frame_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload)


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# Each case: the raw frame, the expected error code and the "seq" the error frame
# names. The first valid state is seq 1 at T0; a bad frame uses seq 2 where it has one.
BAD_FRAMES = [
    pytest.param("hello robot", "invalid_json", None, id="not_json"),
    pytest.param(
        '{"type": "state_update", "seq": 2, "data": {"timest',
        "invalid_json",
        None,
        id="truncated_json",
    ),
    pytest.param(
        with_number(make_state(later(1)), "NaN"), "invalid_json", None, id="nan_token"
    ),
    pytest.param(
        with_number(make_state(later(1)), "Infinity"),
        "invalid_json",
        None,
        id="infinity_token",
    ),
    pytest.param(
        with_number(make_state(later(1)), "-Infinity"),
        "invalid_json",
        None,
        id="negative_infinity",
    ),
    pytest.param(
        with_number(make_state(later(1)), "1e400"),
        "number_out_of_range",
        None,
        id="float_overflow",
    ),
    pytest.param(
        frame_text({"type": "state_update", "seq": "2", "data": make_state(later(1))}),
        "invalid_type",
        None,
        id="seq_as_string",
    ),
    pytest.param(
        frame_text(state_frame(-1, make_state(later(1)))),
        "value_out_of_range",
        None,
        id="negative_seq",
    ),
    pytest.param(
        frame_text(
            state_frame(2, make_state(later(1), position={"x": "1.0", "y": 2.0}))
        ),
        "invalid_type",
        2,
        id="coordinate_as_string",
    ),
    pytest.param(
        frame_text(state_frame(2, make_state(later(1), battery=True))),
        "invalid_type",
        2,
        id="battery_as_bool",
    ),
    pytest.param(
        frame_text(state_frame(2, make_state(later(1), status="flying"))),
        "invalid_type",
        2,
        id="unknown_status",
    ),
    pytest.param(
        frame_text({"type": "state_update", "seq": 2, "data": [1, 2]}),
        "invalid_type",
        2,
        id="data_as_array",
    ),
    pytest.param("[1, 2, 3]", "invalid_type", None, id="frame_as_array"),
    pytest.param(
        frame_text(state_frame(2, make_state("yesterday"))),
        "invalid_type",
        2,
        id="timestamp_not_rfc3339",
    ),
    pytest.param(
        frame_text(state_frame(2, without(make_state(later(1)), "position"))),
        "missing_field",
        2,
        id="missing_position",
    ),
    pytest.param(
        frame_text(state_frame(2, without(make_state(later(1)), "timestamp"))),
        "missing_field",
        2,
        id="missing_timestamp",
    ),
    pytest.param(
        frame_text({"type": "state_update", "data": make_state(later(1))}),
        "missing_field",
        None,
        id="missing_seq",
    ),
    pytest.param(
        frame_text({"type": "state_update", "seq": 2}),
        "missing_field",
        2,
        id="missing_data",
    ),
    pytest.param(
        frame_text(state_frame(2, make_state(later(1), colour="red"))),
        "unknown_field",
        2,
        id="unknown_field_in_state",
    ),
    pytest.param(
        frame_text(
            state_frame(
                2, make_state(later(1), position={"x": 1.0, "y": 2.0, "w": 3.0})
            )
        ),
        "unknown_field",
        2,
        id="unknown_field_in_position",
    ),
    pytest.param(
        frame_text({**state_frame(2, make_state(later(1))), "priority": 1}),
        "unknown_field",
        2,
        id="unknown_field_in_frame",
    ),
    pytest.param(
        frame_text({"type": "teleport", "seq": 2}),
        "unknown_message_type",
        2,
        id="unknown_message_type",
    ),
    pytest.param(
        frame_text({"seq": 2, "data": make_state(later(1))}),
        "unknown_message_type",
        2,
        id="missing_message_type",
    ),
    pytest.param(b"\x00\xff\xfe binary", "invalid_json", None, id="binary_not_json"),
    pytest.param(
        frame_text(
            state_frame(2, make_state(later(1), error_message="x" * MAX_FRAME_BYTES))
        ),
        "frame_too_large",
        None,
        id="text_over_size_limit",
    ),
    pytest.param(
        b"{" + b" " * MAX_FRAME_BYTES + b"}",
        "frame_too_large",
        None,
        id="binary_over_size_limit",
    ),
    pytest.param(
        frame_text(
            state_frame(2, make_state(later(1).replace(tzinfo=None).isoformat()))
        ),
        "timestamp_missing_timezone",
        2,
        id="timestamp_without_zone",
    ),
    pytest.param(
        frame_text(state_frame(2, make_state(datetime.now(UTC) + timedelta(days=1)))),
        "timestamp_in_future",
        2,
        id="timestamp_far_future",
    ),
    pytest.param(
        frame_text(state_frame(2, make_state(later(-1)))),
        "timestamp_out_of_order",
        2,
        id="timestamp_older_than_last",
    ),
    pytest.param(
        frame_text(state_frame(2, make_state("1999-12-31T23:59:59Z"))),
        "timestamp_out_of_range",
        2,
        id="timestamp_before_2000",
    ),
    pytest.param(
        frame_text(state_frame(2, make_state(later(1), battery=-0.5))),
        "value_out_of_range",
        2,
        id="battery_below_zero",
    ),
    pytest.param(
        frame_text(state_frame(2, make_state(later(1), battery=100.5))),
        "value_out_of_range",
        2,
        id="battery_above_100",
    ),
    pytest.param(
        frame_text(
            state_frame(
                2, make_state(later(1), lidar={"ranges": [1.0] * (MAX_LIDAR_BEAMS + 1)})
            )
        ),
        "too_many_beams",
        2,
        id="too_many_lidar_beams",
    ),
    pytest.param(
        frame_text(state_frame(2, make_state(later(1), robot_id="robot-2"))),
        "robot_id_mismatch",
        2,
        id="robot_id_mismatch",
    ),
    pytest.param(
        frame_text(
            {
                "type": "command_response",
                "data": {"command_id": "c-1", "status": "maybe"},
            }
        ),
        "invalid_type",
        None,
        id="command_response_bad_status",
    ),
    pytest.param(
        frame_text(
            {
                "type": "command_response",
                "data": {"command_id": "c\u0000", "status": "succeeded"},
            }
        ),
        "invalid_character",
        None,
        id="command_id_with_nul",
    ),
    pytest.param(
        frame_text(
            state_frame(
                2, make_state(later(1), status="error", error_message="jam\u0000")
            )
        ),
        "invalid_character",
        2,
        id="error_message_with_nul",
    ),
]


async def store_first_state(robot: RobotSocket) -> None:
    await robot.send_state(1, make_state(T0))
    await robot.wait_ack(1)


async def assert_link_survives(
    robot: RobotSocket,
    http: httpx.AsyncClient,
    rows_before: int,
    robot_id: str = ROBOT,
) -> None:
    """Check that a valid state is still acknowledged and stored after the rest."""
    await robot.send_state(3, make_state(later(2)))
    ack = await robot.wait_ack(3)
    assert ack["seq"] == 3
    assert robot.connection.close_code is None
    assert await count_telemetry(http, robot_id) == rows_before + 1


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("raw", "code", "seq"), BAD_FRAMES)
async def test_bad_frame_gets_error_and_link_survives(
    shared_server: RunningServer,
    shared_http: httpx.AsyncClient,
    request: pytest.FixtureRequest,
    raw: str | bytes,
    code: str,
    seq: int | None,
) -> None:
    """A bad frame gets an error frame with its stable code and loses nothing."""
    robot_id = request.node.callspec.id
    http = shared_http
    async with open_robot_socket(shared_server.ws_url, robot_id) as robot:
        await store_first_state(robot)
        await robot.send_raw(raw)
        error = await robot.wait_error(code)

        assert error.get("seq") == seq
        assert error["message"]
        assert error.get("retryable", False) is False
        assert await count_telemetry(http, robot_id) == 1
        await assert_link_survives(robot, http, rows_before=1, robot_id=robot_id)


async def test_error_frame_names_field_path(open_robot: Any) -> None:
    """A validation error frame carries the JSON path of the offending field."""
    async with open_robot(ROBOT) as robot:
        await robot.send_state(1, make_state(T0, battery=150.0))
        error = await robot.wait_error("value_out_of_range")

    assert error["details"] == {"path": "$.data.battery"}
    assert error["seq"] == 1


async def test_duplicate_timestamp_acked_stored_once(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A state repeating the last accepted timestamp is acked and stored once."""
    async with open_robot(ROBOT) as robot:
        await store_first_state(robot)
        await robot.send_state(2, make_state(T0))
        await robot.wait_ack(2)

        assert [frame for frame in robot.received if frame["type"] == "error"] == []
        assert await count_telemetry(http, ROBOT) == 1
        await assert_link_survives(robot, http, rows_before=1)


async def test_out_of_order_checked_across_reconnect(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """The last accepted timestamp survives a reconnect and still orders states."""
    async with open_robot(ROBOT) as robot:
        await store_first_state(robot)

    async with open_robot(ROBOT, expect_welcome=False) as robot:
        welcome = await robot.receive()
        assert welcome == {
            "type": "welcome",
            "robot_id": ROBOT,
            "last_timestamp": iso(T0),
        }
        await robot.send_state(2, make_state(later(-5)))
        error = await robot.wait_error("timestamp_out_of_order")
        assert error["seq"] == 2
        await assert_link_survives(robot, http, rows_before=1)


async def test_frame_over_hard_limit_closes_1009(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A frame above the hard limit closes the link with 1009 and loses nothing."""
    async with open_robot(ROBOT) as robot:
        await store_first_state(robot)
        await robot.send_raw("x" * (HARD_FRAME_LIMIT + 1))
        close_code = await robot.wait_closed()

    assert close_code == 1009
    assert await count_telemetry(http, ROBOT) == 1
    async with open_robot(ROBOT) as robot:
        await assert_link_survives(robot, http, rows_before=1)


INVALID_ROBOT_IDS = [
    ("empty", ""),
    ("too_long", "r" * 65),
    ("space", "robot%201"),
    ("encoded_slash", "robot%2F1"),
    ("plus", "robot+1"),
    ("hash", "robot%231"),
    ("unicode", "robot-%C3%A9"),
    ("control_char", "robot%011"),
    ("delete_char", "robot%7F1"),
    ("leading_dot", ".robot"),
    ("trailing_newline", "robot1%0A"),
    ("newline_only", "%0A"),
]


@pytest.mark.parametrize(
    "robot_path",
    [case[1] for case in INVALID_ROBOT_IDS],
    ids=[case[0] for case in INVALID_ROBOT_IDS],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_invalid_robot_id_rejected(
    shared_server: RunningServer, shared_http: httpx.AsyncClient, robot_path: str
) -> None:
    """A robot id outside the safe set gets ``invalid_robot_id`` and close code 1008."""
    robots_before = (await shared_http.get("/api/robots")).json()
    link = open_robot_socket(shared_server.ws_url, robot_path, expect_welcome=False)
    async with link as robot:
        error = await robot.receive()
        close_code = await robot.wait_closed()

    assert error["type"] == "error"
    assert error["code"] == "invalid_robot_id"
    assert close_code == 1008
    robots = (await shared_http.get("/api/robots")).json()
    assert robots == robots_before


async def test_newline_in_robot_id_refused(
    server: Any, http: httpx.AsyncClient
) -> None:
    """An id with a newline inside it is refused at the handshake (HTTP 403)."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"{server.ws_url}/ws/robots/robot%0A1"):
            pass

    assert refused.value.response.status_code == 403
    assert (await http.get("/api/robots")).json() == []


async def test_longest_valid_robot_id_accepted(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A 64-character robot id is at the limit and is accepted."""
    robot_id = "r" * 64
    async with open_robot(robot_id) as robot:
        await robot.send_state(1, make_state(T0))
        await robot.wait_ack(1)

    assert await count_telemetry(http, robot_id) == 1


async def test_second_connection_replaces_first(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A second connection for a robot closes the first with 4001 and takes over."""
    async with open_robot(ROBOT) as first:
        await store_first_state(first)
        async with open_robot(ROBOT) as second:
            assert await first.wait_closed() == 4001

            await second.send_state(2, make_state(later(1)))
            await second.wait_ack(2)
            state = (await http.get(f"/api/robots/{ROBOT}/state")).json()
            robots = (await http.get("/api/robots")).json()

            assert state["online"] is True
            assert [robot["robot_id"] for robot in robots] == [ROBOT]
            assert second.connection.close_code is None

    rows = await fetch_telemetry(http, ROBOT)
    assert [row["ts"] for row in rows] == [iso(T0), iso(later(1))]
