"""Rejected robot input: rate-limited log lines and windowed counts per robot.

A robot with a bug can send hundreds of bad frames a second. Each one gets
an error frame in reply, but the log gets at most
``lines_per_interval`` lines per robot per interval; the rest are counted
and reported in one ``robot_input_rejected_suppressed`` line per robot when
the interval ends.

The same calls feed :class:`ErrorCounts`, which robot health reads. Both live
in this process's memory: with several API processes, each one counts the
robots connected to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fleethub.logs import current_log_context

logger = logging.getLogger(__name__)

UNKNOWN_ROBOT = "unknown"
BUCKETS_PER_WINDOW = 60


@dataclass
class _RobotLogBudget:
    interval_start: float
    lines: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)


class ErrorCounts:
    """Count errors per robot and code over a sliding window, in time buckets.

    Memory per robot is bounded by :data:`BUCKETS_PER_WINDOW` buckets; a robot
    with no error inside the window is forgotten.
    """

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self.bucket_s = window_s / BUCKETS_PER_WINDOW
        self._clock = clock
        self._robots: dict[str, deque[tuple[int, Counter[str]]]] = {}

    def add(self, robot_id: str, code: str) -> None:
        """Count one error of type ``code`` for ``robot_id`` now."""
        bucket = int(self._clock() // self.bucket_s)
        buckets = self._robots.setdefault(robot_id, deque())
        if not buckets or buckets[-1][0] != bucket:
            buckets.append((bucket, Counter()))
        buckets[-1][1][code] += 1
        self._expire(buckets, bucket)

    def counts(self, robot_id: str) -> dict[str, int]:
        """Return the robot's error counts by code within the window."""
        buckets = self._robots.get(robot_id)
        if buckets is None:
            return {}
        self._expire(buckets, int(self._clock() // self.bucket_s))
        if not buckets:
            del self._robots[robot_id]
            return {}
        total: Counter[str] = Counter()
        for _, counter in buckets:
            total.update(counter)
        return dict(total)

    def _expire(self, buckets: deque[tuple[int, Counter[str]]], now: int) -> None:
        while buckets and buckets[0][0] <= now - BUCKETS_PER_WINDOW:
            buckets.popleft()


class RejectionLog:
    """Log rejected robot input without letting one robot flood the log.

    :meth:`record` takes the robot id from the log context that the transport
    binds for each connection.
    """

    def __init__(
        self,
        lines_per_interval: int,
        interval_s: float,
        errors: ErrorCounts,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lines_per_interval = lines_per_interval
        self.interval_s = interval_s
        self.errors = errors
        self._clock = clock
        self._budgets: dict[str, _RobotLogBudget] = {}
        self.suppressed_total = 0

    def record(self, code: str) -> None:
        """Count one rejection with error ``code`` and log it if the budget allows."""
        robot_id = str(current_log_context().get("robot_id") or UNKNOWN_ROBOT)
        self.errors.add(robot_id, code)
        now = self._clock()
        budget = self._budgets.get(robot_id)
        if budget is None or now - budget.interval_start >= self.interval_s:
            if budget is not None:
                self._summarise(robot_id, budget)
            budget = self._budgets[robot_id] = _RobotLogBudget(now)
        if budget.lines < self.lines_per_interval:
            budget.lines += 1
            logger.warning("robot_input_rejected", extra={"code": code})
            return
        budget.suppressed[code] += 1
        self.suppressed_total += 1

    def flush_due(self, *, final: bool = False) -> None:
        """Summarise every interval that has ended (all of them if ``final``)."""
        now = self._clock()
        for robot_id, budget in list(self._budgets.items()):
            if final or now - budget.interval_start >= self.interval_s:
                self._summarise(robot_id, budget)
                del self._budgets[robot_id]

    async def run(self) -> None:
        """Call :meth:`flush_due` once per interval until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            self.flush_due()

    def _summarise(self, robot_id: str, budget: _RobotLogBudget) -> None:
        if not budget.suppressed:
            return
        logger.warning(
            "robot_input_rejected_suppressed",
            extra={
                "robot_id": robot_id,
                "suppressed": sum(budget.suppressed.values()),
                "codes": dict(budget.suppressed),
                "interval_s": self.interval_s,
            },
        )
