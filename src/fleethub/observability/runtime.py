"""Start and stop the observability parts that run beside the services."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleethub.logs import log_context
from fleethub.observability.readiness import Readiness, build_readiness
from fleethub.observability.rejections import ErrorCounts, RejectionLog

if TYPE_CHECKING:
    from fleethub.services import Services


@dataclass
class Observability:
    """Readiness checks and rejected-input accounting of one process."""

    readiness: Readiness
    errors: ErrorCounts
    rejections: RejectionLog
    summary_task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Stop the summary task, write the last summaries and close check clients."""
        if self.summary_task is not None:
            self.summary_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.summary_task
        self.rejections.flush_due(final=True)
        await self.readiness.close()


def start_observability(services: Services) -> Observability:
    """Hook metrics, readiness and rejection logging into built services."""
    settings = services.settings
    errors = ErrorCounts(settings.health_window_s)
    rejections = RejectionLog(
        settings.rejected_log_lines_per_interval,
        settings.rejected_log_interval_s,
        errors,
    )
    services.pipeline.stats.on_rejection = rejections.record
    services.metrics.collect_from(services)
    with log_context(component="rejection_log"):
        task = asyncio.create_task(rejections.run(), name="rejection-log-summaries")
    return Observability(build_readiness(services), errors, rejections, task)
