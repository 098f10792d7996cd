"""Tests for the stream hub's broadcast log, cursors and ticks, without a server.

Messages go through a real in-process bus and the hub's own fan-out task.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from fleethub.bus.base import EVENTS, STATES
from fleethub.bus.memory import MemoryBus
from fleethub.errors import Overloaded
from fleethub.stream.filters import StreamFilters
from fleethub.stream.hub import Evicted, Position, StreamHub, Subscriber
from fleethub.testing import wait_until
from fleethub.transports.raw_frames import text_frame


def state(number: int, robot_id: str = "r1") -> bytes:
    message = {"type": "state_update", "robot_id": robot_id, "n": number}
    return json.dumps(message).encode()


def event(number: int, severity: str = "warning", robot_id: str = "r1") -> bytes:
    data = {"type": "battery_low", "robot_id": robot_id, "severity": severity}
    return json.dumps({"type": "event", "data": {**data, "n": number}}).encode()


def numbers(messages: list[bytes]) -> list[object]:
    decoded = [json.loads(message) for message in messages]
    return [m.get("n", m.get("data", {}).get("n", m.get("states"))) for m in decoded]


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    bus = MemoryBus()
    yield bus
    await bus.close()


async def started(bus: MemoryBus, **options: float) -> StreamHub:
    values = {"max_states": 4, "max_events": 4, "max_missed": 100, **options}
    hub = StreamHub(bus, **values)  # type: ignore[arg-type]
    hub.start()
    return hub


async def publish(hub: StreamHub, *messages: tuple[str, bytes]) -> None:
    """Publish on the bus and wait until the hub has logged every message."""
    before = hub.log.seq
    for channel, message in messages:
        await hub.bus.publish(channel, message)
    await wait_until(lambda: hub.log.seq == before + len(messages))


def read_all(hub: StreamHub, subscriber: Subscriber) -> list[bytes]:
    read = hub.read(subscriber)
    if read is None:
        return []
    hub.commit(subscriber, read)
    return read.payload.messages


async def test_oldest_states_drop_first(bus: MemoryBus) -> None:
    """The log keeps the latest states, and a reader behind gets the count first."""
    hub = await started(bus)
    reader = hub.connect(StreamFilters())
    await publish(hub, *[(STATES, state(number)) for number in range(10)])

    messages = read_all(hub, reader)

    assert json.loads(messages[0]) == {"type": "missed", "states": 6}
    assert numbers(messages[1:]) == [6, 7, 8, 9]
    assert reader.missed_total == 6
    assert read_all(hub, reader) == []
    await hub.close()


async def test_events_kept_in_arrival_order(bus: MemoryBus) -> None:
    """Events are kept apart from states and keep their place among them."""
    hub = await started(bus, max_states=2)
    reader = hub.connect(StreamFilters())
    await publish(
        hub,
        (STATES, state(1)),
        (EVENTS, event(2)),
        (STATES, state(3)),
        (STATES, state(4)),
    )

    messages = read_all(hub, reader)

    assert json.loads(messages[0])["states"] == 1
    assert numbers(messages[1:]) == [2, 3, 4]
    await hub.close()


async def test_lost_event_evicts_only_those_who_wanted_it(bus: MemoryBus) -> None:
    """An event leaving the log evicts readers that wanted it and had not read it."""
    hub = await started(bus, max_events=2)
    behind = hub.connect(StreamFilters())
    no_events = hub.connect(StreamFilters(events=False))
    critical_only = hub.connect(StreamFilters(min_severity="critical"))
    other_robot = hub.connect(StreamFilters(robot_ids=["r2"]))

    await publish(hub, *[(EVENTS, event(number)) for number in range(3)])

    assert behind.evicted.is_set()
    assert behind.eviction_reason == "too_slow"
    with pytest.raises(Evicted):
        hub.read(behind)
    for kept in (no_events, critical_only, other_robot):
        assert not kept.evicted.is_set()
        assert read_all(hub, kept) == []
    assert hub.subscribers == {no_events, critical_only, other_robot}
    await hub.close()


async def test_reader_that_keeps_up_loses_no_event(bus: MemoryBus) -> None:
    """A reader that reads between bursts gets every event, however many pass."""
    hub = await started(bus, max_events=2)
    reader = hub.connect(StreamFilters())
    seen: list[bytes] = []
    for burst in range(5):
        await publish(hub, *[(EVENTS, event(burst * 2 + n)) for n in range(2)])
        seen.extend(read_all(hub, reader))

    assert numbers(seen) == list(range(10))
    assert not reader.evicted.is_set()
    await hub.close()


async def test_too_many_missed_states_evicts(bus: MemoryBus) -> None:
    """A reader whose unreported missed states pass max_missed is evicted."""
    hub = await started(bus, max_states=1, max_missed=3)
    stuck = hub.connect(StreamFilters())
    reading = hub.connect(StreamFilters())
    seen: list[bytes] = []

    for number in range(6):
        await publish(hub, (STATES, state(number)))
        seen.extend(read_all(hub, reading))
    await wait_until(lambda: stuck.evicted.is_set())

    assert stuck.eviction_reason == "too_slow"
    assert stuck.missed_total > 3
    assert stuck.peak_length <= 1
    assert len(stuck) == 0
    assert numbers(seen) == list(range(6))
    assert not reading.evicted.is_set()
    await hub.close()


async def test_filters_apply_on_read(bus: MemoryBus) -> None:
    """Robot, state and severity filters select what each reader gets."""
    hub = await started(bus, max_states=10, max_events=10)
    everything = hub.connect(StreamFilters())
    r2_only = hub.connect(StreamFilters(robot_ids=["r2"]))
    critical = hub.connect(StreamFilters(min_severity="critical", states=False))
    await publish(
        hub,
        (STATES, state(1, "r1")),
        (STATES, state(2, "r2")),
        (EVENTS, event(3, "warning", "r2")),
        (EVENTS, event(4, "critical", "r1")),
    )

    assert numbers(read_all(hub, everything)) == [1, 2, 3, 4]
    assert numbers(read_all(hub, r2_only)) == [2, 3]
    assert numbers(read_all(hub, critical)) == [4]
    await hub.close()


async def test_equal_readers_share_one_payload(bus: MemoryBus) -> None:
    """Readers with equal filters at the same cursor get the same built payload."""
    hub = await started(bus, max_states=10)
    plain = [hub.connect(StreamFilters()) for _ in range(50)]
    filtered = [hub.connect(StreamFilters(robot_ids=["r1"])) for _ in range(2)]
    limited = [hub.connect(StreamFilters(state_rate_hz=1000)) for _ in range(2)]
    await publish(hub, (STATES, state(1)), (STATES, state(2)))
    built_before = hub.payloads_built

    plain_reads = [hub.read(reader) for reader in plain]
    filtered_reads = [hub.read(reader) for reader in filtered]
    limited_reads = [hub.read(reader) for reader in limited]

    assert len({id(read.payload) for read in plain_reads if read}) == 1
    assert len({id(read.payload) for read in filtered_reads if read}) == 1
    assert len({id(read.payload) for read in limited_reads if read}) == 2
    assert hub.payloads_built - built_before == 1 + 1 + 2
    assert plain_reads[0] is not None
    assert plain_reads[0].payload.batch == (
        b'{"type":"batch","items":[' + state(1) + b"," + state(2) + b"]}"
    )
    await hub.close()


async def test_state_rate_limit_uses_publish_time(bus: MemoryBus) -> None:
    """state_rate_hz keeps at most one state per robot per interval."""
    now = [100.0]
    hub = StreamHub(bus, max_states=10, clock=lambda: now[0])
    hub.start()
    reader = hub.connect(StreamFilters(state_rate_hz=1))
    await publish(hub, (STATES, state(1)), (STATES, state(2, "r2")))
    now[0] += 0.5
    await publish(hub, (STATES, state(3)))
    now[0] += 0.6
    await publish(hub, (STATES, state(4)))

    assert numbers(read_all(hub, reader)) == [1, 2, 4]
    await hub.close()


async def test_burst_wakes_waiters_together(bus: MemoryBus) -> None:
    """Senders wake on one shared tick and get the whole burst at once."""
    hub = await started(bus, max_states=100, tick_s=0.05)
    readers = [hub.connect(StreamFilters()) for _ in range(3)]
    waiters = [asyncio.create_task(hub.wait(reader)) for reader in readers]
    await asyncio.sleep(0)  # let the waiters start waiting

    for number in range(20):
        await bus.publish(STATES, state(number))
    ends = await asyncio.gather(*waiters)

    # The in-process bus delivers without yielding, so the hub drains the
    # whole burst before its first tick.
    assert ends == [Position(20, 0)] * 3
    await hub.close()


async def test_clock_aligns_batching_readers(bus: MemoryBus) -> None:
    """Readers waiting for the same batch interval wake together at the same end."""
    hub = await started(bus)
    ends = await asyncio.gather(*(hub.clock(20) for _ in range(5)))

    assert len(set(ends)) == 1
    await hub.close()


async def test_waiter_of_closed_hub_is_evicted(bus: MemoryBus) -> None:
    """Closing the hub evicts every subscriber, which ends their waits."""
    hub = await started(bus)
    reader = hub.connect(StreamFilters())
    waiter = asyncio.create_task(hub.wait(reader))
    await asyncio.sleep(0)

    await hub.close()

    assert reader.eviction_reason == "server_closing"
    with pytest.raises(Evicted):
        await hub.wait(reader)
    waiter.cancel()


def channels_of(bus: MemoryBus) -> set[str]:
    return set().union(*(s.channels for s in bus.subscriptions()))


async def test_states_channel_only_while_wanted(bus: MemoryBus) -> None:
    """The hub takes bus states only while a subscriber wants them, losing none."""
    hub = await started(bus, max_states=10, max_events=10)
    assert channels_of(bus) == {EVENTS}

    events_only = hub.connect(StreamFilters(states=False))
    assert channels_of(bus) == {EVENTS}
    await bus.publish(EVENTS, event(1))  # queued, not yet read by the hub
    everything = hub.connect(StreamFilters())
    assert channels_of(bus) == {EVENTS, STATES}
    await publish(hub, (STATES, state(2)))

    assert numbers(read_all(hub, events_only)) == [1]
    assert numbers(read_all(hub, everything)) == [2]
    hub.disconnect(everything)
    assert channels_of(bus) == {EVENTS}
    hub.set_filters(events_only, StreamFilters())
    assert channels_of(bus) == {EVENTS, STATES}
    await hub.close()


def test_log_bounds_and_numbers() -> None:
    """The log keeps its bounds however much passes through it."""
    hub = StreamHub(MemoryBus(), max_states=3, max_events=2)
    log = hub.log
    for number in range(1000):
        log.append_state("r1", 0.0, state(number))
    assert log.end == Position(1000, 0)
    assert log.first_state == 997
    assert [entry.message for entry in log.states(0, 1000)] == [
        state(997),
        state(998),
        state(999),
    ]
    assert len(log._states) < 2 * 3


def test_hub_limits_subscribers() -> None:
    """The hub rejects subscribers past max_subscribers with Overloaded."""
    hub = StreamHub(MemoryBus(), max_subscribers=2)
    hub.connect(StreamFilters())
    hub.connect(StreamFilters())

    with pytest.raises(Overloaded) as raised:
        hub.connect(StreamFilters())
    assert raised.value.code == "too_many_subscribers"


class RecordingWriter:
    """A frame writer that keeps what it is given, or rejects writes while told to."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.refuse = False
        self.closed = False

    def write(self, frames: bytes, max_buffered: int) -> bool:
        if self.closed:
            raise ConnectionResetError("closed")
        if self.refuse:
            return False
        self.frames.append(frames)
        return True


async def test_hub_writes_frames_on_its_ticks(bus: MemoryBus) -> None:
    """Pushed subscribers get frames written by the hub: per message or batched."""
    hub = await started(bus, max_states=100)
    plain, batched = RecordingWriter(), RecordingWriter()
    hub.push_to(hub.connect(StreamFilters()), plain)
    hub.push_to(hub.connect(StreamFilters(batch_ms=20)), batched)

    await publish(hub, (STATES, state(1)), (STATES, state(2)))
    await wait_until(lambda: plain.frames and batched.frames)

    assert b"".join(plain.frames) == text_frame(state(1)) + text_frame(state(2))
    assert batched.frames == [
        text_frame(b'{"type":"batch","items":[' + state(1) + b"," + state(2) + b"]}")
    ]
    await hub.close()


async def test_rejected_write_keeps_the_cursor(bus: MemoryBus) -> None:
    """A rejected write is retried from the same place, and a closed one stops."""
    hub = await started(bus, max_states=100)
    writer = RecordingWriter()
    reader = hub.connect(StreamFilters())
    hub.push_to(reader, writer)
    writer.refuse = True

    await publish(hub, (STATES, state(1)))
    await publish(hub, (STATES, state(2)))
    assert reader.state_cursor == 0
    writer.refuse = False
    await wait_until(lambda: reader.state_cursor == 2)

    assert b"".join(writer.frames) == text_frame(state(1)) + text_frame(state(2))
    writer.closed = True
    await publish(hub, (STATES, state(3)))
    await wait_until(lambda: reader.writer is None)
    assert reader.state_cursor == 2
    await hub.close()


async def test_subscribe_moves_a_pushed_subscriber(bus: MemoryBus) -> None:
    """New filters take effect for pushed subscribers, batch interval included."""
    hub = await started(bus, max_states=100)
    writer = RecordingWriter()
    reader = hub.connect(StreamFilters())
    hub.push_to(reader, writer)
    hub.set_filters(reader, StreamFilters(batch_ms=10, robot_ids=["r2"]))

    await publish(hub, (STATES, state(1)), (STATES, state(2, "r2")))
    await wait_until(lambda: writer.frames)

    assert writer.frames == [
        text_frame(b'{"type":"batch","items":[' + state(2, "r2") + b"]}")
    ]
    await hub.close()


async def test_rejected_write_keeps_rate_limited_states(bus: MemoryBus) -> None:
    """A rate-limited state kept in a rejected write is written on the retry."""
    now = [100.0]
    hub = StreamHub(bus, max_states=10, clock=lambda: now[0])
    hub.start()
    writer = RecordingWriter()
    reader = hub.connect(StreamFilters(state_rate_hz=1))
    hub.push_to(reader, writer)
    writer.refuse = True

    await publish(hub, (STATES, state(1)))
    now[0] += 0.5
    await publish(hub, (STATES, state(2)))
    writer.refuse = False
    await wait_until(lambda: reader.state_cursor == 2)

    assert writer.frames == [text_frame(state(1))]
    await hub.close()
