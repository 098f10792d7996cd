"""Robot health: how each robot has been doing over a recent window.

For each robot, over the last ``health_window_s`` seconds:

- uptime: seconds connected, from the stored ``robot_connected`` and
  ``robot_disconnected`` events, and its share of the window (or of the time
  since the robot first connected, if that is shorter);
- connections: how many times it connected;
- errors by type: fault reports (``robot_error``) from the stored events,
  plus input this process rejected, by error code;
- message rate: states per second over the last ``health_rate_window_s``;
- last seen, latest battery and the battery trend in percent per hour.

The status is the worst that any threshold in the settings gives. Offline,
silent, a robot in error, too many errors or a flat battery make a robot
``unhealthy``. Low uptime, frequent reconnects, some errors or a fast drain
make it ``warning``. ``reasons`` lists every threshold crossed.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel

from fleethub.live.base import RobotSnapshot
from fleethub.models import utcnow
from fleethub.observability.health_queries import (
    ConnectionHistory,
    HealthQueries,
    TelemetryFigures,
)
from fleethub.protocol import RobotStatus
from fleethub.settings import Settings

if TYPE_CHECKING:
    from fleethub.services import Services

ROBOT_ERROR = "robot_error"
NO_TELEMETRY = TelemetryFigures(0, None, 0, None)


class HealthStatus(enum.StrEnum):
    """Overall verdict, in increasing order of concern."""

    HEALTHY = "healthy"
    WARNING = "warning"
    UNHEALTHY = "unhealthy"


SEVERITY = {HealthStatus.HEALTHY: 0, HealthStatus.WARNING: 1, HealthStatus.UNHEALTHY: 2}


class RobotHealth(BaseModel):
    """One robot's health over the window."""

    robot_id: str
    status: HealthStatus
    reasons: list[str]
    online: bool
    last_seen: datetime | None
    window_s: float
    uptime_s: float
    uptime_ratio: float
    connections: int
    errors: dict[str, int]
    error_total: int
    message_rate_per_s: float
    battery_percent: float | None
    battery_trend_percent_per_h: float | None


class FleetHealth(BaseModel):
    """Every known robot's health and how many are in each status."""

    status: HealthStatus
    counts: dict[HealthStatus, int]
    robots: list[RobotHealth]


class _Inputs:
    """Everything read for one health report, keyed by robot id."""

    def __init__(self, now: datetime, start: datetime) -> None:
        self.now = now
        self.start = start
        self.created: dict[str, datetime] = {}
        self.telemetry: dict[str, TelemetryFigures] = {}
        self.robot_errors: dict[str, int] = {}
        self.connections: dict[str, ConnectionHistory] = {}
        self.live: dict[str, RobotSnapshot] = {}


async def robot_health(services: Services, robot_id: str) -> RobotHealth:
    """Return the health of one robot (known to exist)."""
    inputs = await _read(services, robot_id)
    return _assess(services, inputs, robot_id)


async def fleet_health(services: Services) -> FleetHealth:
    """Return the health of every known robot."""
    inputs = await _read(services, None)
    robot_ids = sorted(set(inputs.created) | set(inputs.live))
    reports = [_assess(services, inputs, robot_id) for robot_id in robot_ids]
    counts = {status: 0 for status in HealthStatus}
    for report in reports:
        counts[report.status] += 1
    worst = max(
        (report.status for report in reports), key=SEVERITY.__getitem__, default=None
    )
    return FleetHealth(
        status=worst or HealthStatus.HEALTHY, counts=counts, robots=reports
    )


async def _read(services: Services, robot_id: str | None) -> _Inputs:
    settings = services.settings
    now = utcnow()
    inputs = _Inputs(now, now - timedelta(seconds=settings.health_window_s))
    rate_start = now - timedelta(seconds=settings.health_rate_window_s)
    queries = HealthQueries(services.storage)
    inputs.created = await queries.created_at(robot_id)
    inputs.telemetry = await queries.telemetry(robot_id, inputs.start, rate_start)
    inputs.robot_errors = await queries.robot_errors(robot_id, inputs.start)
    inputs.connections = await queries.connections(robot_id, inputs.start)
    if robot_id is None:
        inputs.live = {
            snapshot.robot_id: snapshot for snapshot in await services.live.all()
        }
    else:
        snapshot = await services.live.get(robot_id)
        inputs.live = {} if snapshot is None else {robot_id: snapshot}
    return inputs


def _assess(services: Services, inputs: _Inputs, robot_id: str) -> RobotHealth:
    settings = services.settings
    snapshot = inputs.live.get(robot_id)
    figures = inputs.telemetry.get(robot_id, NO_TELEMETRY)
    history = inputs.connections.get(robot_id, ConnectionHistory(False, []))
    online = bool(snapshot and snapshot.online)
    last_seen = (snapshot.last_seen if snapshot else None) or figures.last_timestamp

    observed_from = _observed_from(inputs, robot_id, history)
    observed_s = max((inputs.now - observed_from).total_seconds(), 1e-9)
    uptime_s = _uptime(history, inputs.start, inputs.now, online, last_seen)
    errors = _errors(services, inputs, robot_id)

    report = RobotHealth(
        robot_id=robot_id,
        status=HealthStatus.HEALTHY,
        reasons=[],
        online=online,
        last_seen=last_seen,
        window_s=settings.health_window_s,
        uptime_s=uptime_s,
        uptime_ratio=min(uptime_s / observed_s, 1.0),
        connections=sum(1 for kind, _ in history.changes if kind == "robot_connected"),
        errors=errors,
        error_total=sum(errors.values()),
        message_rate_per_s=figures.recent_samples / settings.health_rate_window_s,
        battery_percent=snapshot.state.battery if snapshot and snapshot.state else None,
        battery_trend_percent_per_h=figures.battery_slope_per_h,
    )
    _apply_thresholds(report, snapshot, settings, inputs.now)
    return report


def _observed_from(
    inputs: _Inputs, robot_id: str, history: ConnectionHistory
) -> datetime:
    """Return where the uptime ratio's denominator starts.

    That is the window start, unless the robot is newer than the window: then
    its first stored connection, so a robot online since it first connected
    has a ratio of 1.
    """
    created = inputs.created.get(robot_id)
    if created is None or created <= inputs.start:
        return inputs.start
    connects = [at for kind, at in history.changes if kind == "robot_connected"]
    return connects[0] if connects else created


def _errors(services: Services, inputs: _Inputs, robot_id: str) -> dict[str, int]:
    """Merge this process's rejected-input counts with stored fault reports."""
    observability = services.observability
    errors = observability.errors.counts(robot_id) if observability else {}
    if inputs.robot_errors.get(robot_id):
        errors[ROBOT_ERROR] = inputs.robot_errors[robot_id]
    return errors


def _uptime(
    history: ConnectionHistory,
    start: datetime,
    now: datetime,
    online: bool,
    last_seen: datetime | None,
) -> float:
    """Sum the connected intervals that fall inside ``[start, now]``, in seconds.

    A connection still open in the events but not in the live state (the
    process that held it stopped without a disconnect event) counts up to
    the robot's last-seen time.

    NOTE: connection events reach the database through the event writer, so
    for up to its flush interval (0.2 s) after a connect the new connection
    is not counted yet.
    """
    total = 0.0
    since = start if history.connected_at_start else None
    for kind, at in history.changes:
        if kind == "robot_connected" and since is None:
            since = at
        elif kind == "robot_disconnected" and since is not None:
            total += (at - since).total_seconds()
            since = None
    if since is not None:
        end = now if online else max(since, last_seen or since)
        total += (min(end, now) - since).total_seconds()
    return max(total, 0.0)


def _apply_thresholds(
    report: RobotHealth,
    snapshot: RobotSnapshot | None,
    settings: Settings,
    now: datetime,
) -> None:
    unhealthy: list[str] = []
    warning: list[str] = []
    if not report.online:
        unhealthy.append("offline")
    elif (
        report.last_seen
        and (now - report.last_seen).total_seconds() > settings.offline_after_s
    ):
        unhealthy.append(f"no state for more than {settings.offline_after_s:g} s")
    if snapshot and snapshot.state and snapshot.state.status is RobotStatus.ERROR:
        unhealthy.append("robot reports status error")
    if report.error_total >= settings.health_errors_unhealthy:
        unhealthy.append(f"{report.error_total} errors in the window")
    elif report.error_total >= settings.health_errors_warning:
        warning.append(f"{report.error_total} errors in the window")
    battery = report.battery_percent
    if battery is not None and battery < settings.health_battery_unhealthy_percent:
        unhealthy.append(f"battery at {battery:g} %")
    warning.extend(_trend_warnings(report, settings))
    report.reasons = unhealthy + warning
    if unhealthy:
        report.status = HealthStatus.UNHEALTHY
    elif warning:
        report.status = HealthStatus.WARNING


def _trend_warnings(report: RobotHealth, settings: Settings) -> list[str]:
    reasons = []
    if report.uptime_ratio < settings.health_uptime_warning_ratio:
        reasons.append(f"online {report.uptime_ratio:.0%} of the window")
    if report.connections >= settings.health_connections_warning:
        reasons.append(f"{report.connections} connections in the window")
    drain = settings.health_battery_drain_warning_percent_per_h
    trend = report.battery_trend_percent_per_h
    if trend is not None and trend < -drain:
        reasons.append(f"battery falling {-trend:.1f} %/h")
    return reasons
