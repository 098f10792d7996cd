"""Prometheus metrics for one fleethub app instance.

Each :class:`FleetMetrics` owns its own :class:`~prometheus_client.CollectorRegistry`
(never the global default one), so a test can run several servers in one process
and read each one's numbers apart.

Two kinds of series live here:

- Counters the ingest path already keeps (pipeline stats, writer stats, link and
  bus sizes) are read at scrape time by :class:`ServicesCollector`, so a state on
  the hot path costs nothing extra.
- Events that have no counter elsewhere (HTTP requests, writer flushes, and the
  commands, missions, webhooks and scheduler runs of other features) are
  recorded through the metric objects on :class:`FleetMetrics`, for example
  ``services.metrics.commands_total.labels(state="sent").inc()``.

Labels stay bounded: route templates rather than raw paths, error codes and
event types from the code, and never a robot id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleethub.commands.store import CommandStatus
from fleethub.missions.store import MissionStatus
from fleethub.models import Event

if TYPE_CHECKING:
    from fleethub.ingest.writer import BatchWriter
    from fleethub.services import Services

INF = math.inf
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    INF,
)
BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, INF)
CONNECTION_BUCKETS = (1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, INF)


@runtime_checkable
class BusStats(Protocol):
    """Event-bus methods the collector reads to report subscribers and drops."""

    def subscriptions(self) -> set[object]: ...

    def dropped_total(self) -> int: ...


# Events the command and mission services emit on each transition, mapped to
# the state entered. Both sets are closed, so the label stays bounded.
_COMMAND_EVENT_STATES = {
    f"command_{status.value}": status.value for status in CommandStatus
}
_MISSION_EVENT_STATES = {
    "mission_created": MissionStatus.PENDING.value,
    "mission_assigned": MissionStatus.ASSIGNED.value,
    "mission_started": MissionStatus.ACTIVE.value,
    "mission_completed": MissionStatus.COMPLETED.value,
    "mission_failed": MissionStatus.FAILED.value,
    "mission_cancelled": MissionStatus.CANCELLED.value,
    "mission_timed_out": MissionStatus.TIMED_OUT.value,
}


class FleetMetrics:
    """The metric objects of one app instance, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The standard process_* (CPU, memory, open files) and python_info series.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._define_request_metrics()
        self._define_writer_metrics()
        self._define_feature_metrics()

    def _define_request_metrics(self) -> None:
        registry = self.registry
        self.http_requests_total = Counter(
            "fleethub_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_request_duration_seconds = Histogram(
            "fleethub_http_request_duration_seconds",
            "HTTP request latency from the first byte in to the last byte out.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.websocket_connections_total = Counter(
            "fleethub_websocket_connections",
            "WebSocket connections opened, by route template.",
            ["route"],
            registry=registry,
        )
        self.websocket_active = Gauge(
            "fleethub_websocket_active",
            "WebSocket connections open now, by route template.",
            ["route"],
            registry=registry,
        )
        self.websocket_duration_seconds = Histogram(
            "fleethub_websocket_duration_seconds",
            "How long WebSocket connections stayed open, by route template.",
            ["route"],
            buckets=CONNECTION_BUCKETS,
            registry=registry,
        )

    def _define_writer_metrics(self) -> None:
        self.writer_batch_size = Histogram(
            "fleethub_writer_batch_size",
            "Items per committed batch, by writer (telemetry, events).",
            ["writer"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.writer_flush_seconds = Histogram(
            "fleethub_writer_flush_seconds",
            "Seconds to write one batch, retries included, by writer.",
            ["writer"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def _define_feature_metrics(self) -> None:
        registry = self.registry
        self.commands_total = Counter(
            "fleethub_commands",
            "Command state changes, by the state entered.",
            ["state"],
            registry=registry,
        )
        self.missions_total = Counter(
            "fleethub_missions",
            "Mission state changes, by the state entered.",
            ["state"],
            registry=registry,
        )
        self.webhook_deliveries_total = Counter(
            "fleethub_webhook_deliveries",
            "Webhook delivery attempts, by outcome (success, failure).",
            ["outcome"],
            registry=registry,
        )
        self.webhook_failures_total = Counter(
            "fleethub_webhook_failures",
            "Failed webhook deliveries, by reason (timeout, connection, status).",
            ["reason"],
            registry=registry,
        )
        self.scheduler_runs_total = Counter(
            "fleethub_scheduler_runs",
            "Scheduled job runs, by job kind and outcome (success, failure).",
            ["kind", "outcome"],
            registry=registry,
        )

    def observe_lifecycle_event(self, event: Event) -> None:
        """Count command and mission state changes from the events they emit."""
        command_state = _COMMAND_EVENT_STATES.get(event.type)
        if command_state is not None:
            self.commands_total.labels(state=command_state).inc()
            return
        mission_state = _MISSION_EVENT_STATES.get(event.type)
        if mission_state is not None:
            self.missions_total.labels(state=mission_state).inc()

    def observe_webhook_attempt(self, outcome: str, status_code: int | None) -> None:
        """Count one webhook delivery attempt as recorded by the deliverer.

        ``outcome`` is ``delivered``, ``failed`` or ``circuit_open``; a failure
        with an HTTP status is a ``status`` failure, one without is a
        ``connection`` failure (timeouts included).
        """
        if outcome == "delivered":
            self.webhook_deliveries_total.labels(outcome="success").inc()
            return
        self.webhook_deliveries_total.labels(outcome="failure").inc()
        if outcome == "circuit_open":
            reason = "circuit_open"
        else:
            reason = "status" if status_code is not None else "connection"
        self.webhook_failures_total.labels(reason=reason).inc()

    def flush_observer(self, writer: str) -> Callable[[int, float], None]:
        """Return a ``BatchWriter`` ``on_flush`` hook feeding the flush histograms."""
        batch_size = self.writer_batch_size.labels(writer=writer)
        flush_seconds = self.writer_flush_seconds.labels(writer=writer)

        def observe(count: int, seconds: float) -> None:
            batch_size.observe(count)
            flush_seconds.observe(seconds)

        return observe

    def collect_from(self, services: Services) -> None:
        """Read the services' own counters at every scrape."""
        self.registry.register(ServicesCollector(services))


class ServicesCollector(Collector):
    """Turn the counters the services keep anyway into metrics, at scrape time."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest_metrics()
        yield from self._writer_metrics()
        yield from self._connection_metrics()

    def _ingest_metrics(self) -> Iterator[Metric]:
        stats = self.services.pipeline.stats
        rejected = sum(stats.rejected.values())
        yield CounterMetricFamily(
            "fleethub_states_received",
            "Robot frames on the state path: accepted, duplicate or rejected.",
            value=stats.accepted + stats.duplicates + rejected,
        )
        yield CounterMetricFamily(
            "fleethub_states_accepted",
            "States accepted and queued.",
            value=stats.accepted,
        )
        yield CounterMetricFamily(
            "fleethub_states_duplicate",
            "Resent states acknowledged again without storing.",
            value=stats.duplicates,
        )
        yield _labelled_counter(
            "fleethub_states_rejected",
            "Robot frames rejected, by error code.",
            "reason",
            stats.rejected,
        )
        yield _labelled_counter(
            "fleethub_events", "Events raised, by type.", "type", stats.events
        )
        observability = self.services.observability
        if observability is not None:
            yield CounterMetricFamily(
                "fleethub_rejected_log_lines_suppressed",
                "Rejected-input log lines held back by the per-robot rate limit.",
                value=observability.rejections.suppressed_total,
            )
        yield CounterMetricFamily(
            "fleethub_rate_limit_storage_failures",
            "Rate-limit checks let through because the counter storage failed.",
            value=self.services.security.limiter.failure_log.failed_open_total,
        )

    def _writer_metrics(self) -> Iterator[Metric]:
        telemetry = self.services.telemetry_writer
        writers: dict[str, BatchWriter[Any]] = {
            "telemetry": telemetry,
            "events": self.services.event_writer,
        }
        yield GaugeMetricFamily(
            "fleethub_ingest_queue_depth",
            "States waiting in the telemetry writer's buffer.",
            value=len(telemetry),
        )
        yield GaugeMetricFamily(
            "fleethub_ack_lag_seconds",
            "Age of the oldest state not yet stored and acknowledged.",
            value=telemetry.oldest_pending_age(),
        )
        yield GaugeMetricFamily(
            "fleethub_ack_lag_last_batch_seconds",
            "Submit-to-acknowledgement time of the oldest state in the last batch.",
            value=telemetry.stats.last_ack_lag_seconds,
        )
        yield from _writer_families(writers)

    def _connection_metrics(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "fleethub_connected_robots",
            "Robots with a live link to this process.",
            value=len(self.services.links),
        )
        bus = self.services.bus
        if isinstance(bus, BusStats):
            yield GaugeMetricFamily(
                "fleethub_bus_subscribers",
                "Open event-bus subscriptions in this process.",
                value=len(bus.subscriptions()),
            )
            yield CounterMetricFamily(
                "fleethub_bus_subscriber_drops",
                "Messages dropped because a subscriber fell behind.",
                value=bus.dropped_total(),
            )


def _labelled_counter(
    name: str, documentation: str, label: str, values: dict[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _writer_families(writers: dict[str, BatchWriter[Any]]) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "fleethub_writer_queue_depth", "Items buffered, by writer.", labels=["writer"]
    )
    healthy = GaugeMetricFamily(
        "fleethub_writer_healthy",
        "1 while the writer's last attempt succeeded, 0 while it retries.",
        labels=["writer"],
    )
    counters = {
        "items_written": "Items committed",
        "retries": "Batch write retries after a storage outage",
        "overflows": "Submits rejected because the buffer was full",
        "failed_items": "Items the database rejected for good",
    }
    families = {
        key: CounterMetricFamily(
            f"fleethub_writer_{key}", f"{text}, by writer.", labels=["writer"]
        )
        for key, text in counters.items()
    }
    for name, writer in writers.items():
        depth.add_metric([name], len(writer))
        healthy.add_metric([name], 1.0 if writer.healthy else 0.0)
        for key, family in families.items():
            family.add_metric([name], getattr(writer.stats, key))
    yield depth
    yield healthy
    yield from families.values()
