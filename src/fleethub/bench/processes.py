"""Start load and subscriber processes and relay what they report.

Both kinds of process put ``(kind, payload)`` tuples on a queue; the harness
passes every tuple except the final ``done`` or ``failed`` to ``on_event``
(the progress bar, or a scenario that waits for a step to start).
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time
from collections.abc import Callable
from typing import Any

from fleethub.bench.servers import BenchError

EventHandler = Callable[[str, Any], None]

_context = multiprocessing.get_context("spawn")


class ChildProcess:
    """One spawned load or subscriber process and its report queue."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        self.queue = _context.Queue()
        self.stop = _context.Event()
        self.process = _context.Process(
            target=target, args=(*args, self.queue, self.stop), daemon=True
        )

    def start(self) -> ChildProcess:
        self.process.start()
        return self

    def wait_for(
        self, kinds: set[str], on_event: EventHandler, timeout_s: float
    ) -> tuple[str, Any]:
        """Relay events until one of ``kinds`` (or a result) arrives; return it."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"A load process reported nothing for {timeout_s} s.")
            try:
                kind, payload = self.queue.get(timeout=min(remaining, 1.0))
            except queue_module.Empty:
                if not self.process.is_alive():
                    raise BenchError(
                        f"A load process exited with code {self.process.exitcode} "
                        "without a result."
                    ) from None
                continue
            if kind == "failed":
                raise BenchError(f"A load process failed:\n{payload}")
            if kind in kinds or kind == "done":
                return kind, payload
            on_event(kind, payload)

    def result(self, on_event: EventHandler, timeout_s: float) -> Any:
        """Relay events until the process reports its result, and return it."""
        _, payload = self.wait_for({"done"}, on_event, timeout_s)
        self.process.join(timeout=10)
        return payload

    def terminate(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


def ignore_event(kind: str, payload: Any) -> None:
    """Drop a progress event."""
