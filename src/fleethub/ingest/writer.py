"""Batched durable writes with acknowledgements after commit.

Producers hand items to :meth:`BatchWriter.submit` without waiting. A
background task writes them in batches, flushing when a batch is full or
when the oldest item has waited ``flush_interval_s``. Only after a batch
commits does each producer get ``acknowledge(seq)`` for its highest
sequence number in it, so an acknowledgement always means "stored".

While the database is down the batch is retried with back-off and new items
wait in a bounded buffer; once the buffer is full, :meth:`submit` raises
:class:`~fleethub.errors.Overloaded` and the producer tells its robot to slow
down. Nothing accepted is dropped: an item is either written, or rejected to
its producer with an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from itertools import islice
from typing import Generic, NamedTuple, Protocol, TypeVar

from fleethub.errors import Overloaded, StorageUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RETRY_DELAY_S = 5.0


class AckTarget(Protocol):
    """A producer notified when its items are stored (a robot connection)."""

    def acknowledge(self, seq: int) -> None:
        """Everything up to ``seq`` from this producer is durably handled."""

    def reject_stored(self, seq: int, code: str, message: str) -> None:
        """The item ``seq`` could not be stored and never will be."""


class _Pending(NamedTuple, Generic[T]):
    item: T | None  # None marks an acknowledgement with nothing new to write
    target: AckTarget | None
    seq: int | None
    queued_at: float = 0.0  # time.monotonic() at submit, for the acknowledgement lag


class WriterStats:
    """Counters read by the metrics endpoint and the benchmarks."""

    def __init__(self) -> None:
        self.items_written = 0
        self.batches = 0
        self.overflows = 0
        self.failed_items = 0
        self.retries = 0
        self.last_batch_size = 0
        self.last_flush_seconds = 0.0
        # Seconds from submit to acknowledgement of the oldest item in the last batch.
        self.last_ack_lag_seconds = 0.0


class BatchWriter(Generic[T]):
    """Write items in batches through ``write``, acknowledging after commit."""

    def __init__(
        self,
        name: str,
        write: Callable[[Sequence[T]], Awaitable[None]],
        *,
        batch_size: int,
        flush_interval_s: float,
        max_buffer: int,
        on_flush: Callable[[int, float], None] | None = None,
    ) -> None:
        self.name = name
        self._write = write
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self._on_flush = on_flush
        self._buffer: deque[_Pending[T]] = deque()
        self._has_items = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._space = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = WriterStats()
        self.healthy = True

    def __len__(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        """Start the background flush task."""
        self._task = asyncio.create_task(self._run(), name=f"writer-{self.name}")

    def submit(
        self, item: T | None, target: AckTarget | None = None, seq: int | None = None
    ) -> None:
        """Queue ``item`` for writing; raise :class:`Overloaded` if the buffer is full.

        ``item`` may be None to acknowledge ``seq`` once everything queued before
        it is stored (a duplicate that was already accepted).
        """
        if self._closing:
            raise Overloaded("Server is shutting down; retry on another connection.")
        if len(self._buffer) >= self.max_buffer:
            self.stats.overflows += 1
            raise Overloaded(
                f"Write buffer is full ({self.max_buffer} items); "
                "slow down and resend.",
                buffered=len(self._buffer),
            )
        self._buffer.append(_Pending(item, target, seq, time.monotonic()))
        self._idle.clear()
        self._has_items.set()
        if len(self._buffer) >= self.batch_size:
            self._batch_full.set()

    @property
    def full(self) -> bool:
        return len(self._buffer) >= self.max_buffer

    def oldest_pending_age(self) -> float:
        """Return seconds the oldest buffered item has waited (0 when empty)."""
        if not self._buffer:
            return 0.0
        return time.monotonic() - self._buffer[0].queued_at

    async def wait_for_space(self) -> None:
        """Wait until the buffer has room again."""
        while self.full and not self._closing:
            self._space.clear()
            await self._space.wait()

    async def barrier(self, timeout: float) -> None:
        """Wait until everything submitted before this call is written."""
        done = asyncio.get_running_loop().create_future()
        self.submit(None, _FutureTarget(done), 0)
        await asyncio.wait_for(done, timeout)

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until everything submitted so far is written."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self, timeout: float = 30.0) -> None:
        """Flush what is buffered, then stop the background task."""
        self._closing = True
        self._space.set()
        self._has_items.set()
        self._batch_full.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            logger.error(
                "writer_close_timeout",
                extra={"writer": self.name, "unwritten": len(self._buffer)},
            )
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                self._idle.set()
                if self._closing:
                    return
                self._has_items.clear()
                await self._has_items.wait()
                continue
            if len(self._buffer) < self.batch_size and not self._closing:
                await self._wait_for_batch()
            await self._flush_one_batch()

    async def _wait_for_batch(self) -> None:
        self._batch_full.clear()
        if len(self._buffer) >= self.batch_size:
            return
        try:
            await asyncio.wait_for(self._batch_full.wait(), self.flush_interval_s)
        except TimeoutError:
            pass

    async def _flush_one_batch(self) -> None:
        count = min(self.batch_size, len(self._buffer))
        # islice walks the deque once; indexing it item by item walks from an
        # end for every index.
        batch = list(islice(self._buffer, count))
        oldest_queued_at = batch[0].queued_at  # read first: a retry may replace it
        started = time.perf_counter()
        written = await self._write_with_retry(batch)
        elapsed = time.perf_counter() - started
        for _ in range(count):
            self._buffer.popleft()
        self._space.set()
        if len(self._buffer) < self.batch_size:
            self._batch_full.clear()
        self.stats.batches += 1
        self.stats.last_batch_size = written
        self.stats.last_flush_seconds = elapsed
        self.stats.last_ack_lag_seconds = time.monotonic() - oldest_queued_at
        if self._on_flush is not None:
            self._on_flush(written, elapsed)
        _acknowledge(batch)

    async def _write_with_retry(self, batch: list[_Pending[T]]) -> int:
        """Write the batch, retrying while storage is down; return items written."""
        delay = 0.05
        written = 0
        while True:
            items = [pending.item for pending in batch if pending.item is not None]
            try:
                if items:
                    await self._write(items)
                self.stats.items_written += len(items)
                self.healthy = True
                return written + len(items)
            except StorageUnavailable as exc:
                self.healthy = False
                self.stats.retries += 1
                logger.warning(
                    "writer_retry",
                    extra={"writer": self.name, "error": str(exc), "delay_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
            except Exception:
                logger.exception("writer_batch_failed", extra={"writer": self.name})
                try:
                    written += await self._write_one_by_one(batch)
                except StorageUnavailable:
                    continue

    async def _write_one_by_one(self, batch: list[_Pending[T]]) -> int:
        """Isolate the items a batch failed on, so the rest still get stored.

        Each handled item is blanked in ``batch`` (its acknowledgement kept), so
        that a retry after a lost connection does not write it twice.
        """
        written = 0
        for index, pending in enumerate(batch):
            if pending.item is None:
                continue
            try:
                await self._write([pending.item])
                written += 1
                self.stats.items_written += 1
            except StorageUnavailable:
                raise
            except Exception as exc:
                self.stats.failed_items += 1
                logger.exception("writer_item_failed", extra={"writer": self.name})
                if pending.target is not None and pending.seq is not None:
                    pending.target.reject_stored(
                        pending.seq, "storage_rejected", str(exc)
                    )
            batch[index] = pending._replace(item=None)
        return written


class _FutureTarget:
    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    def acknowledge(self, seq: int) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def reject_stored(self, seq: int, code: str, message: str) -> None:
        self.acknowledge(seq)


def _acknowledge(batch: list[_Pending[T]]) -> None:
    """Send each producer one acknowledgement for its highest seq in the batch."""
    highest: dict[int, tuple[AckTarget, int]] = {}
    for _, target, seq, _ in batch:
        if target is None or seq is None:
            continue
        current = highest.get(id(target))
        if current is None or seq > current[1]:
            highest[id(target)] = (target, seq)
    for target, seq in highest.values():
        target.acknowledge(seq)
