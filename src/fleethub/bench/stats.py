"""Latency percentiles and per-step counters shared by the load processes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec


class LatencySummary(msgspec.Struct):
    """Latency percentiles in milliseconds over ``count`` samples."""

    count: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


def summarize(latencies_s: Sequence[float]) -> LatencySummary:
    """Summarize latencies given in seconds (nearest-rank percentiles)."""
    if not latencies_s:
        return LatencySummary()
    ordered = sorted(latencies_s)
    return LatencySummary(
        count=len(ordered),
        p50_ms=_rank(ordered, 0.50) * 1000.0,
        p99_ms=_rank(ordered, 0.99) * 1000.0,
        max_ms=ordered[-1] * 1000.0,
    )


def _rank(ordered: Sequence[float], fraction: float) -> float:
    index = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[index]


class StepResult(msgspec.Struct):
    """What the load process saw during one load step.

    ``started_at`` and ``ended_at`` are wall-clock seconds (``time.time()``),
    so the harness can match them with its samples of the server process.
    ``kept_up`` is True when the server acknowledged what was sent in time,
    even if the load fell short of the target. ``sustained`` also needs the
    load to reach the target.
    """

    index: int
    target_rate: float
    robots: int
    duration_s: float
    started_at: float
    ended_at: float
    sent: int
    acked: int
    errors: int
    latency: LatencySummary
    load_cpu_s: float
    sustained: bool = False
    kept_up: bool = False
    reason: str = ""

    @property
    def send_rate(self) -> float:
        return self.sent / self.duration_s

    @property
    def ack_rate(self) -> float:
        return self.acked / self.duration_s
