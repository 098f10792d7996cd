"""The load process: simulated robots that send states and time the acks.

:func:`load_main` runs in its own process (started by the harness with the
``spawn`` start method) so that the load never shares an interpreter with
the server under test. It opens one raw ``websockets`` connection per robot
(ids ``bench-0001``, ``bench-0002`` ...), then runs the plan's steps: during
a step every robot sends ``state_update`` frames, encoded with msgspec, at
``rate / robots`` Hz with strictly increasing timestamps. The latency of a
state is the time from its send to the first ``ack`` whose ``seq`` covers it.

Progress and results go to the harness through a multiprocessing queue as
``(kind, payload)`` tuples: ``connected``, ``step_started``, ``step`` and
finally ``done`` or ``failed``.
"""

from __future__ import annotations

import asyncio
import math
import time
import traceback
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from fleethub.bench.robot import BenchRobot, Pacer, Recorder
from fleethub.bench.stats import StepResult, summarize
from fleethub.protocol import Welcome, decode_server_frame

WELCOME_TIMEOUT_S = 120.0

# A ramp whose first step fails halves the rate at most this many times.
MAX_STEPS_DOWN = 5
MIN_RATE = 1.0
REFINE_RATIO = 1.5


class LoadPlan(msgspec.Struct, frozen=True):
    """What the load process does, and how it judges a step sustained.

    With ``rates`` the steps run those total rates (msg/s) in order. Without
    it the rate ramps: it starts at ``start_rate`` and doubles after every
    sustained step up to ``max_rate``; when the first step fails, it halves
    instead. Once a failed rate sits above a sustained one, one step at their
    geometric mean narrows the bracket when ``refine`` is set.

    After each step the robots pause for up to ``max_p99_s`` so that the
    step's last states can be acknowledged. A step is sustained when the load
    reached ``min_send_fraction`` of the target rate, the server acknowledged
    at least ``min_ack_fraction`` of the step's states by the end of that
    pause, and the p99 ack latency stayed under ``max_p99_s``.
    """

    ws_url: str
    robots: int
    step_s: float
    rates: list[float] | None = None
    start_rate: float = 100.0
    max_rate: float = 200_000.0
    refine: bool = False
    stop_on_failure: bool = True
    min_send_fraction: float = 0.95
    min_ack_fraction: float = 0.98
    max_p99_s: float = 1.0
    drain_timeout_s: float = 10.0
    connect_concurrency: int = 100
    answer_commands: bool = False
    first_robot: int = 1


class LoadResult(msgspec.Struct):
    """Totals over the whole run of one load process."""

    connected: int
    connect_failures: int
    connect_s: float
    connected_at: float
    steps: list[StepResult]
    sent: int
    acked: int
    drained: bool
    errors: dict[str, int]
    disconnects: int
    command_receipts: dict[str, float]
    highest_sustained_rate: float | None


def robot_id(index: int) -> str:
    """Return the robot id the load uses for robot number ``index`` (from 1)."""
    return f"bench-{index:04d}"


def load_main(plan: LoadPlan, queue: Any, stop: Any) -> None:
    """Run ``plan`` and report through ``queue``; the process entry point.

    Setting the multiprocessing event ``stop`` ends the run after the current
    step.
    """
    try:
        _use_uvloop()
        result = asyncio.run(_run(plan, queue, stop))
        queue.put(("done", result))
    except BaseException:  # noqa: BLE001 - the harness must hear about any crash
        queue.put(("failed", traceback.format_exc()))


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _run(plan: LoadPlan, queue: Any, stop: Any) -> LoadResult:
    recorder = Recorder()
    pacer = Pacer()
    started = time.perf_counter()
    robots, failures = await _connect_all(plan, recorder, pacer)
    connect_s = time.perf_counter() - started
    connected_at = time.time()
    queue.put(("connected", {"robots": len(robots), "failures": failures}))
    tasks = [task for robot in robots for task in robot.start()]
    steps = await _run_steps(plan, robots, recorder, pacer, queue, stop)
    pacer.finish()
    drained = await recorder.wait_drained(plan.drain_timeout_s)
    await _close_all(robots, tasks)
    return LoadResult(
        connected=len(robots),
        connect_failures=failures,
        connect_s=connect_s,
        connected_at=connected_at,
        steps=steps,
        sent=recorder.total_sent,
        acked=recorder.total_acked,
        drained=drained,
        errors=dict(recorder.error_codes),
        disconnects=recorder.disconnects,
        command_receipts=dict(recorder.command_receipts),
        highest_sustained_rate=_highest_sustained(steps),
    )


async def _connect_all(
    plan: LoadPlan, recorder: Recorder, pacer: Pacer
) -> tuple[list[BenchRobot], int]:
    gate = asyncio.Semaphore(plan.connect_concurrency)
    indexes = range(plan.first_robot, plan.first_robot + plan.robots)

    async def open_one(position: int, index: int) -> BenchRobot | None:
        async with gate:
            ws = await _open(f"{plan.ws_url}/ws/robots/{robot_id(index)}")
        if ws is None:
            return None
        phase = position / plan.robots
        answers = plan.answer_commands and position == 0
        return BenchRobot(robot_id(index), ws, recorder, pacer, phase, answers)

    opened = await asyncio.gather(
        *(open_one(position, index) for position, index in enumerate(indexes))
    )
    robots = [robot for robot in opened if robot is not None]
    return robots, plan.robots - len(robots)


async def _open(url: str) -> ClientConnection | None:
    """Connect and wait for the ``welcome`` frame; None when either fails.

    A server may accept the WebSocket before it is ready for the robot's
    states (fleethub reads the robot's last stored state first), so a robot
    counts as connected only once it is welcomed.
    """
    try:
        ws = await connect(
            url,
            compression=None,
            proxy=None,
            ping_interval=None,
            open_timeout=30,
            max_size=None,
        )
    except (OSError, TimeoutError, WebSocketException):
        return None
    try:
        first = decode_server_frame(
            await asyncio.wait_for(ws.recv(), WELCOME_TIMEOUT_S)
        )
    except (TimeoutError, WebSocketException, msgspec.MsgspecError):
        first = None
    if not isinstance(first, Welcome):
        await ws.close()
        return None
    return ws


async def _run_steps(
    plan: LoadPlan,
    robots: list[BenchRobot],
    recorder: Recorder,
    pacer: Pacer,
    queue: Any,
    stop: Any,
) -> list[StepResult]:
    steps: list[StepResult] = []
    while (rate := next_rate(plan, steps)) is not None and not stop.is_set():
        index = len(steps)
        step = await _run_step(plan, index, rate, len(robots), recorder, pacer, queue)
        steps.append(step)
        queue.put(("step", step))

    return steps


def next_rate(plan: LoadPlan, steps: list[StepResult]) -> float | None:
    """Return the total rate of the next step, or None when the run is over."""
    if plan.rates is not None:
        failed = any(not step.sustained for step in steps)
        if len(steps) >= len(plan.rates) or (plan.stop_on_failure and failed):
            return None
        return plan.rates[len(steps)]
    if not steps:
        return plan.start_rate
    passed = [step.target_rate for step in steps if step.sustained]
    if not passed:
        lower = steps[-1].target_rate / 2
        return lower if len(steps) < MAX_STEPS_DOWN and lower >= MIN_RATE else None
    best = max(passed)
    above = [step.target_rate for step in steps if not step.sustained]
    above = [rate for rate in above if rate > best]
    if not above:
        return best * 2 if best * 2 <= plan.max_rate else None
    if plan.refine and min(above) / best > REFINE_RATIO:
        return round(math.sqrt(best * min(above)))
    return None


async def _run_step(
    plan: LoadPlan,
    index: int,
    rate: float,
    robots: int,
    recorder: Recorder,
    pacer: Pacer,
    queue: Any,
) -> StepResult:
    recorder.begin_step()
    cpu_before = time.process_time()
    started_at = time.time()
    queue.put(("step_started", {"index": index, "rate": rate, "at": started_at}))
    pacer.run(robots / rate if rate > 0 else None)
    await asyncio.sleep(plan.step_s)
    pacer.pause()
    ended_at = time.time()
    load_cpu_s = time.process_time() - cpu_before
    await recorder.wait_drained(plan.max_p99_s)
    acked, latencies = recorder.acked, list(recorder.latencies)
    # The backlog of a failed step drains before the next step starts.
    await recorder.wait_drained(plan.drain_timeout_s)
    step = StepResult(
        index=index,
        target_rate=rate,
        robots=robots,
        duration_s=plan.step_s,
        started_at=started_at,
        ended_at=ended_at,
        sent=recorder.sent,
        acked=acked,
        errors=recorder.errors,
        latency=summarize(latencies),
        load_cpu_s=load_cpu_s,
    )
    step.kept_up, reason = _judge_acks(plan, step)
    load_short = step.sent < plan.min_send_fraction * step.target_rate * step.duration_s
    step.sustained = step.kept_up and not load_short
    if load_short:
        reached = f"load reached only {step.send_rate:.0f} msg/s"
        reason = f"{reached}; {reason or 'acks kept up'}"
    step.reason = reason
    return step


def _judge_acks(plan: LoadPlan, step: StepResult) -> tuple[bool, str]:
    """Decide whether the server acknowledged what was sent, with the reason if not."""
    if step.robots == 0 or step.sent == 0:
        return False, "nothing was sent"
    if step.acked < plan.min_ack_fraction * step.sent:
        return False, f"acked {step.acked} of {step.sent} sent"
    p99 = step.latency.p99_ms
    if p99 is None or p99 > plan.max_p99_s * 1000.0:
        return False, f"p99 ack latency {p99:.0f} ms"
    return True, ""


def _highest_sustained(steps: list[StepResult]) -> float | None:
    rates = [step.target_rate for step in steps if step.sustained]
    return max(rates) if rates else None


async def _close_all(robots: list[BenchRobot], tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()

    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(robot.close() for robot in robots), return_exceptions=True)
