"""Tests for the stream hub's per-subscriber queues, without a server."""

from __future__ import annotations

import json

from fleethub.bus.memory import MemoryBus
from fleethub.errors import Overloaded
from fleethub.stream.filters import StreamFilters
from fleethub.stream.hub import Envelope, StreamHub, Subscriber, decode_envelope


def state(number: int) -> bytes:
    return json.dumps({"type": "state_update", "robot_id": "r1", "n": number}).encode()


def event(number: int, severity: str = "warning") -> tuple[Envelope, bytes]:
    data = {"type": "battery_low", "robot_id": "r1", "severity": severity, "n": number}
    message = json.dumps({"type": "event", "data": data}).encode()
    return decode_envelope(message), message


def numbers(messages: list[bytes]) -> list[object]:
    decoded = [json.loads(message) for message in messages]
    return [m.get("n", m.get("data", {}).get("n", m.get("states"))) for m in decoded]


def subscriber(**limits: int) -> Subscriber:
    values = {"max_states": 4, "max_events": 4, "max_missed": 100, **limits}
    return Subscriber(StreamFilters(), **values)


async def test_oldest_states_drop_first() -> None:
    """A full state queue drops its oldest states and reports the count first."""
    queue = subscriber()
    for number in range(10):
        assert queue.offer_state("r1", state(number))

    messages = [await queue.next() for _ in range(5)]

    assert json.loads(messages[0]) == {"type": "missed", "states": 6}
    assert numbers(messages[1:]) == [6, 7, 8, 9]
    assert queue.missed_total == 6


async def test_events_kept_in_arrival_order() -> None:
    """Events are never dropped for states and keep their place among them."""
    queue = subscriber(max_states=2)
    queue.offer_state("r1", state(1))
    queue.offer_event(*event(2))
    queue.offer_state("r1", state(3))
    queue.offer_state("r1", state(4))

    messages = [await queue.next() for _ in range(4)]

    assert json.loads(messages[0])["states"] == 1
    assert numbers(messages[1:]) == [2, 3, 4]


def test_full_event_queue_requests_eviction() -> None:
    """Offering an event to a full event queue returns False."""
    queue = subscriber(max_events=2)

    accepted = [queue.offer_event(*event(number)) for number in range(3)]

    assert accepted == [True, True, False]
    assert len(queue) == 2


def test_too_many_missed_requests_eviction() -> None:
    """More unreported misses than max_missed returns False."""
    queue = subscriber(max_states=1, max_missed=3)

    accepted = [queue.offer_state("r1", state(number)) for number in range(6)]

    assert accepted == [True, True, True, True, False, False]


def test_min_severity_filters_events() -> None:
    """Events below min_severity are not queued."""
    queue = Subscriber(
        StreamFilters(min_severity="critical"), max_states=4, max_events=4, max_missed=4
    )

    queue.offer_event(*event(1, "warning"))
    queue.offer_event(*event(2, "critical"))

    assert len(queue) == 1


def test_hub_limits_subscribers() -> None:
    """The hub rejects subscribers past max_subscribers with Overloaded."""
    hub = StreamHub(MemoryBus(), max_subscribers=2)
    hub.connect(StreamFilters())
    hub.connect(StreamFilters())

    try:
        hub.connect(StreamFilters())
    except Overloaded as exc:
        assert exc.code == "too_many_subscribers"
    else:
        raise AssertionError("third subscriber was accepted")
