"""Read CARMEN robot logs into timestamped replay samples.

This module depends only on the standard library. It streams a plain or gzip
CARMEN log (gzip is detected by its magic bytes) and yields one
:class:`ReplaySample` per robot pose, in file order.

Format: one message per line, space separated, numbers in fixed or scientific
notation. Timestamped messages end with ``ipc_timestamp ipc_hostname
logger_timestamp``, and the reader uses ``ipc_timestamp``.

- ``ODOM x y theta tv rv accel ipc_ts host logger_ts`` (10 tokens).
- ``FLASER n r_1 ... r_n x y theta odom_x odom_y odom_theta ipc_ts host
  logger_ts`` (``n + 11`` tokens). Ranges are in metres, from -90 degrees
  (right) counter-clockwise. A range at or above :data:`NO_RETURN_RANGE` means
  no return.
- Comments (``#``), ``PARAM``, ``NEFF`` (a SLAM diagnostic) and any other line
  type are skipped. A known line with the wrong token count or a number that
  does not parse to a finite float is counted as malformed and skipped.

Replay policy
-------------
The server rejects a state whose timestamp is not strictly later than the
robot's previous one, and the stored trajectory must follow the order in which
the poses appear in the file. The bundled Intel Research Lab log (corrected
by a SLAM run) breaks both naive readings. These are the measured facts:

- Each ``FLASER`` carries the SLAM-corrected pose of its scan, and its
  timestamp equals that of the ``ODOM`` line just before it (910 of 910
  scans). That ``ODOM`` line is the odometry prediction for the same instant.
  The corrections average 5.9 cm and 0.045 rad (median), at most 0.185 rad.
- The ``ODOM`` line right after each ``FLASER`` repeats the corrected pose
  exactly (910 of 910), with a meaningless timestamp. It is 0 on 841 lines,
  a tiny value such as 1.3e-153 or 3.7e-86 on some, and a small number up to
  81.83 s on the rest. The next ``ODOM`` lines continue from the corrected
  pose.
- The other 13,631 ``ODOM`` timestamps step backwards 629 times, by at most
  0.9 s (median 0.36 s), and repeat the previous value 2,459 times, while the
  poses in file order form a smooth path. Keeping every ``ODOM`` line with a
  non-zero timestamp shows backward steps of up to 2,684 s near the end of
  the file. Those come from repeated poses stamped with leftovers such as
  1.2 s, not from real odometry.

So the reader emits one sample per instant with the best pose for it:

1. (a) An ``ODOM`` line whose pose equals the previous scan's pose is dropped
   as a repeat, whatever its timestamp. Keeping the repeats would make the
   path zigzag through each correction twice: it measures 561.7 m, of which
   53.3 m is correction jumps, against 508.4 m of pure odometry motion.
2. (c) A scan with the same timestamp as the pending ``ODOM`` line replaces
   that line. The sample gets the scan's corrected pose and its ranges, so
   each scan sits at the pose it was registered at. A scan with its own
   timestamp becomes a sample of its own.
3. (b) ``log_time`` is the file timestamp, raised where needed to
   :data:`MIN_TIME_STEP` after the previous sample, so it increases strictly
   in file order. Sorting by timestamp would reorder the motion, and dropping
   late lines would lose poses. In the bundled log this moves 3,944 samples,
   none by more than 0.91 s.

For the bundled log this yields 13,631 samples and 910 scans with a path of
530.3 m. That is 0.7 % below the 534.1 m of all ``ODOM`` lines with a
non-zero timestamp, and 5.6 % below the 561.7 m that keeps the repeats.

Velocity
--------
The file's velocity fields are zero, so velocities come from the poses.
Timestamps are bunched and retimed samples are only 1 ms apart, so
differences between neighbouring samples give absurd speeds. The reader
estimates both velocities over a window of log time instead. It takes the
last sample at least :data:`VELOCITY_HALF_WINDOW` seconds earlier and the
first sample at least that much later (or the ends of the log). ``linear`` is
the displacement projected on the heading, so it is signed and ignores
sideways correction jumps, divided by the time between those samples.
``angular`` is the unwrapped heading change over the same span. On the
bundled log the speed is 0.19 m/s at the median, 0.32 m/s at the 99th
percentile and 0.50 m/s at most, and ``angular`` stays within 0.60 rad/s.
Half-windows of 0.25 s and 0.5 s gave maxima of 1.54 m/s and 0.72 m/s.
"""

from __future__ import annotations

import gzip
import io
import math
import os
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import IO, Final

NO_RETURN_RANGE: Final = 81.8
"""Smallest range in metres that means no return (the bundled log writes 81.83)."""

MIN_TIME_STEP: Final = 0.001
"""Minimum gap in seconds between consecutive ``log_time`` values."""

VELOCITY_HALF_WINDOW: Final = 1.0
"""Half-width in seconds of the log-time window that velocities span."""

LogSource = str | os.PathLike[str] | Traversable
"""A file path, or a package resource such as :func:`intel_lab_log`."""

_GZIP_MAGIC: Final = b"\x1f\x8b"
_ODOM_TOKENS: Final = 10
_FLASER_EXTRA_TOKENS: Final = 11


@dataclass(frozen=True, slots=True)
class ReplaySample:
    """One robot state to replay, in the log's map frame.

    ``log_time`` is in seconds since the start of the log and strictly greater
    than the previous sample's. ``x`` and ``y`` are in metres, ``theta`` in
    radians, ``linear`` in m/s along the heading and ``angular`` in rad/s.
    ``ranges`` contains a scan's ranges in metres, or is ``None`` when the pose
    had no scan.
    """

    log_time: float
    x: float
    y: float
    theta: float
    linear: float
    angular: float
    ranges: tuple[float, ...] | None = None


@dataclass
class ReadStats:
    """Counters that :func:`read_samples` fills in while it streams a log.

    ``line_counts`` counts non-blank lines by first token (``#`` for
    comments), malformed ones included. ``skipped_lines`` counts lines that
    carry no pose: comments, ``PARAM``, ``NEFF`` and unknown types.
    """

    line_counts: Counter[str] = field(default_factory=Counter)
    skipped_lines: int = 0
    malformed_lines: int = 0
    repeated_poses: int = 0
    replaced_poses: int = 0
    retimed_samples: int = 0
    max_backward_step: float = 0.0
    max_time_shift: float = 0.0


@dataclass(frozen=True, slots=True)
class LogSummary:
    """Counts and extent of one log as :func:`read_samples` replays it.

    Times are ``log_time`` values in seconds (``None`` for a log without
    samples) and ``path_length`` is in metres. ``stats`` contains the line
    counters described in :class:`ReadStats`.
    """

    stats: ReadStats
    samples: int
    scans: int
    first_log_time: float | None
    last_log_time: float | None
    path_length: float


@dataclass(frozen=True, slots=True)
class _Pose:
    time: float
    x: float
    y: float
    theta: float
    ranges: tuple[float, ...] | None = None


def intel_lab_log() -> Traversable:
    """Return the bundled Intel Research Lab log (gzip CARMEN, see its README)."""
    return files("fleethub") / "data" / "intel-lab" / "intel-corrected.log.gz"


def read_samples(
    source: LogSource, stats: ReadStats | None = None
) -> Iterator[ReplaySample]:
    """Stream the replay samples of a CARMEN log, following the module policy.

    The file is read lazily, line by line, and stays open until the iterator
    is exhausted or closed. ``stats``, if given, is updated as lines are read.
    Raises ``OSError`` if the file cannot be opened or read, and
    ``EOFError`` or ``gzip.BadGzipFile`` if a gzip stream is truncated or
    corrupt. A malformed line is counted in ``stats`` and skipped, not raised.
    """
    counters = stats if stats is not None else ReadStats()
    with _open_text(source) as lines:
        poses = _select_poses(_parse_lines(lines, counters), counters)
        yield from _with_velocities(_retime(poses, counters), VELOCITY_HALF_WINDOW)


def path_length(samples: Iterable[ReplaySample]) -> float:
    """Return the length in metres of the polyline through the samples' x, y."""
    total = 0.0
    previous: ReplaySample | None = None
    for sample in samples:
        if previous is not None:
            total += math.hypot(sample.x - previous.x, sample.y - previous.y)
        previous = sample

    return total


def summarize_log(source: LogSource) -> LogSummary:
    """Read a whole log once and return its :class:`LogSummary`.

    Raises the same errors as :func:`read_samples`.
    """
    stats = ReadStats()
    samples = scans = 0
    first: ReplaySample | None = None
    last: ReplaySample | None = None
    length = 0.0
    for sample in read_samples(source, stats):
        if last is not None:
            length += math.hypot(sample.x - last.x, sample.y - last.y)
        if first is None:
            first = sample
        last = sample
        samples += 1
        scans += sample.ranges is not None

    first_time = first.log_time if first else None
    last_time = last.log_time if last else None
    return LogSummary(stats, samples, scans, first_time, last_time, length)


@contextmanager
def _open_text(source: LogSource) -> Iterator[IO[str]]:
    """Open ``source`` as text, decompressing it if it starts with gzip magic."""
    with ExitStack() as stack:
        raw = stack.enter_context(_open_binary(source))
        is_gzip = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        binary: IO[bytes] | gzip.GzipFile = raw
        if is_gzip:
            binary = stack.enter_context(gzip.GzipFile(fileobj=raw))
        # Undecodable bytes become U+FFFD, so their line fails to parse.
        text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace")
        yield stack.enter_context(text)


def _open_binary(source: LogSource) -> IO[bytes]:
    if isinstance(source, str | os.PathLike):
        return open(source, "rb")
    return source.open("rb")


def _parse_lines(lines: Iterable[str], stats: ReadStats) -> Iterator[_Pose]:
    """Yield the pose of each well-formed ODOM and FLASER line, counting the rest."""
    for line in lines:
        tokens = line.split()
        if not tokens:
            continue
        kind = "#" if tokens[0].startswith("#") else tokens[0]
        stats.line_counts[kind] += 1
        if kind not in ("ODOM", "FLASER"):
            stats.skipped_lines += 1
            continue
        try:
            yield _parse_odom(tokens) if kind == "ODOM" else _parse_flaser(tokens)
        except ValueError:
            stats.malformed_lines += 1


def _parse_odom(tokens: list[str]) -> _Pose:
    if len(tokens) != _ODOM_TOKENS:
        raise ValueError(f"ODOM needs {_ODOM_TOKENS} tokens, got {len(tokens)}")
    x, y, theta = (_finite(token) for token in tokens[1:4])
    return _Pose(_finite(tokens[7]), x, y, theta)


def _parse_flaser(tokens: list[str]) -> _Pose:
    count = int(tokens[1]) if len(tokens) > 1 else -1
    if count < 0 or len(tokens) != count + _FLASER_EXTRA_TOKENS:
        raise ValueError(f"FLASER with {count} ranges has {len(tokens)} tokens")
    ranges = tuple(_finite(token) for token in tokens[2 : 2 + count])
    # The robot pose follows the laser pose; both are the corrected pose in
    # the bundled log, where the laser offset is 0.
    x, y, theta = (_finite(token) for token in tokens[count + 5 : count + 8])
    return _Pose(_finite(tokens[count + 8]), x, y, theta, ranges)


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {token!r}")
    return value


def _select_poses(poses: Iterable[_Pose], stats: ReadStats) -> Iterator[_Pose]:
    """Drop repeats of a scan's pose and let a scan replace its same-time ODOM."""
    pending: _Pose | None = None
    for pose in poses:
        if pending is not None and _is_repeat(pose, pending):
            stats.repeated_poses += 1
            continue
        if pending is not None and pose.ranges is not None:
            if pending.ranges is None and pending.time == pose.time:
                stats.replaced_poses += 1
                pending = None
        if pending is not None:
            yield pending
        pending = pose

    if pending is not None:
        yield pending


def _is_repeat(pose: _Pose, previous: _Pose) -> bool:
    """Tell whether ``pose`` is an ODOM line that repeats the previous scan's pose."""
    same_place = (pose.x, pose.y, pose.theta) == (
        previous.x,
        previous.y,
        previous.theta,
    )
    return pose.ranges is None and previous.ranges is not None and same_place


def _retime(poses: Iterable[_Pose], stats: ReadStats) -> Iterator[_Pose]:
    """Raise timestamps where needed so they increase strictly in file order."""
    previous_file_time: float | None = None
    previous_time = -math.inf
    for pose in poses:
        if previous_file_time is not None:
            step_back = previous_file_time - pose.time
            stats.max_backward_step = max(stats.max_backward_step, step_back)
        previous_file_time = pose.time
        time = max(pose.time, previous_time + MIN_TIME_STEP)
        if time != pose.time:
            stats.retimed_samples += 1
            stats.max_time_shift = max(stats.max_time_shift, time - pose.time)
            pose = _Pose(time, pose.x, pose.y, pose.theta, pose.ranges)
        previous_time = time
        yield pose


@dataclass(frozen=True, slots=True)
class _TrackPoint:
    """A pose with the signed distance and unwrapped heading since the start."""

    pose: _Pose
    distance: float
    heading: float


def _track(poses: Iterable[_Pose]) -> Iterator[_TrackPoint]:
    previous: _TrackPoint | None = None
    for pose in poses:
        if previous is None:
            point = _TrackPoint(pose, 0.0, pose.theta)
        else:
            point = _advance(previous, pose)
        yield point
        previous = point


def _advance(previous: _TrackPoint, pose: _Pose) -> _TrackPoint:
    """Extend the track by ``pose``, projecting the step on the mean heading."""
    turn = _wrap_angle(pose.theta - previous.pose.theta)
    mean_heading = previous.pose.theta + turn / 2
    dx = pose.x - previous.pose.x
    dy = pose.y - previous.pose.y
    forward = dx * math.cos(mean_heading) + dy * math.sin(mean_heading)
    return _TrackPoint(pose, previous.distance + forward, previous.heading + turn)


def _wrap_angle(angle: float) -> float:
    return math.remainder(angle, math.tau)


def _with_velocities(
    poses: Iterable[_Pose], half_window: float
) -> Iterator[ReplaySample]:
    """Attach velocities estimated over ``half_window`` seconds on each side.

    Buffers only the samples inside the current window, so memory stays small.
    """
    window: deque[_TrackPoint] = deque()
    centre = 0
    for point in _track(poses):
        window.append(point)
        while centre < len(window) and _has_lookahead(window, centre, half_window):
            yield _sample_at(window, centre, half_window)
            centre += 1
            centre -= _trim(window, centre, half_window)

    while centre < len(window):
        yield _sample_at(window, centre, half_window)
        centre += 1


def _has_lookahead(window: deque[_TrackPoint], centre: int, half: float) -> bool:
    return window[-1].pose.time >= window[centre].pose.time + half


def _trim(window: deque[_TrackPoint], centre: int, half: float) -> int:
    """Drop points that no later window needs and return how many were dropped."""
    if centre >= len(window):
        return 0
    start = window[centre].pose.time - half
    dropped = 0
    while dropped < centre and window[1].pose.time <= start:
        window.popleft()
        dropped += 1

    return dropped


def _sample_at(window: deque[_TrackPoint], centre: int, half: float) -> ReplaySample:
    point = window[centre]
    time = point.pose.time
    before = centre
    while before > 0 and window[before].pose.time > time - half:
        before -= 1
    after = centre
    while after < len(window) - 1 and window[after].pose.time < time + half:
        after += 1

    start, end = window[before], window[after]
    span = end.pose.time - start.pose.time
    linear = (end.distance - start.distance) / span if span > 0 else 0.0
    angular = (end.heading - start.heading) / span if span > 0 else 0.0
    pose = point.pose
    return ReplaySample(time, pose.x, pose.y, pose.theta, linear, angular, pose.ranges)
