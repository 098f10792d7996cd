"""Tests for the CARMEN log reader behind ``fleethub replay``."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

from fleethub.replay.carmen import (
    MIN_TIME_STEP,
    NO_RETURN_RANGE,
    ReadStats,
    ReplaySample,
    intel_lab_log,
    path_length,
    read_samples,
    summarize_log,
)

BUNDLED_SAMPLES = 13_631
BUNDLED_SCANS = 910


# A number or its text, so tests can write notations such as "1e0" or "nan".
Number = float | str


def odom(x: Number, y: Number, theta: Number, time: Number) -> str:
    return f"ODOM {x} {y} {theta} 0 0 0 {time} host {time}"


def flaser(ranges: list[float], x: float, y: float, theta: float, time: float) -> str:
    values = " ".join(str(r) for r in ranges)
    pose = f"{x} {y} {theta}"
    return f"FLASER {len(ranges)} {values} {pose} {pose} {time} host {time}"


def write_log(tmp_path: Path, lines: list[str], name: str = "robot.log") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def bundled_lines() -> list[list[str]]:
    with intel_lab_log().open("rb") as raw, gzip.open(raw, "rt") as text:
        return [line.split() for line in text if line.strip()]


def bundled_samples() -> list[ReplaySample]:
    return list(read_samples(intel_lab_log()))


def polyline_length(points: list[tuple[float, float]]) -> float:
    pairs = zip(points, points[1:], strict=False)
    return sum(math.dist(a, b) for a, b in pairs)


def test_odom_line_parses_pose_and_time(tmp_path: Path) -> None:
    """An ODOM line becomes a sample with its pose, time and no ranges."""
    path = write_log(tmp_path, [odom(1.5, -2.25, 0.5, 3.125)])

    [sample] = read_samples(path)

    assert (sample.x, sample.y, sample.theta) == (1.5, -2.25, 0.5)
    assert sample.log_time == 3.125
    assert sample.ranges is None


def test_scientific_notation_parses(tmp_path: Path) -> None:
    """Numbers in scientific notation parse like fixed notation."""
    path = write_log(tmp_path, [odom("-5.20417e-18", "1e0", "2.5E-1", "1.5e1")])

    [sample] = read_samples(path)

    assert sample.x == -5.20417e-18
    assert sample.y == 1.0
    assert sample.theta == 0.25
    assert sample.log_time == 15.0


def test_flaser_with_own_time_is_sample(tmp_path: Path) -> None:
    """A FLASER line with its own timestamp adds a sample with its ranges."""
    ranges = [1.0, 2.5, NO_RETURN_RANGE + 0.03]
    lines = [odom(0, 0, 0, 1.0), flaser(ranges, 0.1, 0.2, 0.3, 1.5)]

    samples = list(read_samples(write_log(tmp_path, lines)))

    assert len(samples) == 2
    assert samples[0].ranges is None
    assert samples[1].ranges == tuple(ranges)
    assert (samples[1].x, samples[1].y, samples[1].theta) == (0.1, 0.2, 0.3)
    assert samples[1].log_time == 1.5


def test_flaser_replaces_same_time_odom(tmp_path: Path) -> None:
    """A scan takes the place of the ODOM line that has its timestamp."""
    lines = [odom(0, 0, 0, 1.0), odom(0.5, 0, 0, 2.0), flaser([3.0], 0.4, 0.1, 0, 2.0)]
    stats = ReadStats()

    samples = list(read_samples(write_log(tmp_path, lines), stats))

    assert [s.x for s in samples] == [0.0, 0.4]
    assert samples[1].ranges == (3.0,)
    assert stats.replaced_poses == 1


def test_repeated_scan_pose_is_dropped(tmp_path: Path) -> None:
    """ODOM lines repeating a scan's pose are dropped whatever their timestamp."""
    lines = [
        odom(0, 0, 0, 1.0),
        flaser([3.0], 0.1, 0, 0, 1.0),
        odom(0.1, 0, 0, 0),
        "NEFF 15",
        odom(0.2, 0, 0, 2.0),
        flaser([3.0], 0.3, 0, 0, 2.0),
        odom(0.3, 0, 0, "1.65576e-153"),
        odom(0.4, 0, 0, 3.0),
    ]
    stats = ReadStats()

    samples = list(read_samples(write_log(tmp_path, lines), stats))

    assert [s.x for s in samples] == [0.1, 0.3, 0.4]
    assert [s.log_time for s in samples] == [1.0, 2.0, 3.0]
    assert stats.repeated_poses == 2


def test_skipped_line_types_are_counted(tmp_path: Path) -> None:
    """Comments, PARAM, NEFF and unknown types are skipped and counted."""
    lines = [
        "# message formats defined: PARAM ODOM FLASER",
        "PARAM robot_frontlaser_offset 0.0 nohost 0",
        odom(0, 0, 0, 1.0),
        "NEFF 14.8386",
        "RLASER 1 2.0 0 0 0 0 0 0 1.0 host 1.0",
        "",
        odom(1, 0, 0, 2.0),
    ]
    stats = ReadStats()

    samples = list(read_samples(write_log(tmp_path, lines), stats))

    assert len(samples) == 2
    assert stats.skipped_lines == 4
    assert stats.malformed_lines == 0
    assert stats.line_counts == {"#": 1, "PARAM": 1, "ODOM": 2, "NEFF": 1, "RLASER": 1}


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    """Lines with a wrong token count or a bad number are counted, not raised."""
    lines = [
        odom(0, 0, 0, 1.0),
        "ODOM 1 2 3 0 0 0 4.0 host",
        odom("abc", 0, 0, 2.0),
        odom(0, "nan", 0, 2.0),
        odom(0, 0, 0, "inf"),
        "FLASER 3 1.0 2.0 0 0 0 0 0 0 2.0 host 2.0",
        "FLASER x 1.0 0 0 0 0 0 0 2.0 host 2.0",
        "FLASER",
        flaser([1.0, 2.0], 0, 0, 0, 2.0).replace("2.0 ", "2.0.0 ", 1),
        odom(1, 0, 0, 3.0),
    ]
    stats = ReadStats()

    samples = list(read_samples(write_log(tmp_path, lines), stats))

    assert [s.x for s in samples] == [0.0, 1.0]
    assert stats.malformed_lines == 8
    assert stats.skipped_lines == 0


def test_undecodable_bytes_are_malformed(tmp_path: Path) -> None:
    """A line with bytes that are not UTF-8 is counted as malformed."""
    path = tmp_path / "binary.log"
    path.write_bytes(b"ODOM 0 0 0 0 0 0 1.0 h 1.0\nODOM \xff 0 0 0 0 0 2.0 h 2.0\n")
    stats = ReadStats()

    samples = list(read_samples(path, stats))

    assert len(samples) == 1
    assert stats.malformed_lines == 1


def test_gzip_and_plain_give_same_samples(tmp_path: Path) -> None:
    """The same log read plain and gzip-compressed yields identical samples."""
    lines = [
        odom(0, 0, 0, 1.0),
        flaser([2.0, 81.83], 0.1, 0, 0.1, 1.0),
        odom(1, 0, 0, 2),
    ]
    plain = write_log(tmp_path, lines)
    compressed = tmp_path / "robot.log.gz"
    compressed.write_bytes(gzip.compress(plain.read_bytes()))

    assert list(read_samples(plain)) == list(read_samples(compressed))


def test_gzip_is_detected_by_content(tmp_path: Path) -> None:
    """Gzip is recognised by its magic bytes, not by the file name."""
    text = odom(2, 3, 0, 1.0) + "\n"
    disguised = tmp_path / "compressed.log"
    disguised.write_bytes(gzip.compress(text.encode()))
    misnamed = tmp_path / "plain.log.gz"
    misnamed.write_text(text)

    assert [s.x for s in read_samples(disguised)] == [2.0]
    assert [s.x for s in read_samples(misnamed)] == [2.0]


def test_bundled_gzip_matches_plain_copy(tmp_path: Path) -> None:
    """The bundled log gives the same samples after decompression to plain text."""
    with intel_lab_log().open("rb") as raw:
        plain = tmp_path / "intel-corrected.log"
        plain.write_bytes(gzip.decompress(raw.read()))

    assert list(read_samples(plain)) == bundled_samples()


def test_backward_timestamps_are_raised(tmp_path: Path) -> None:
    """Backward and repeated timestamps are raised just past the previous one."""
    times = [1.0, 1.5, 1.2, 1.5, 1.5, 2.0]
    lines = [odom(i * 0.1, 0, 0, t) for i, t in enumerate(times)]
    stats = ReadStats()

    samples = list(read_samples(write_log(tmp_path, lines), stats))

    assert [s.x for s in samples] == [i * 0.1 for i in range(len(times))]
    expected = [1.0, 1.5, 1.501, 1.502, 1.503, 2.0]
    for sample, time in zip(samples, expected, strict=True):
        assert math.isclose(sample.log_time, time), sample
    assert stats.retimed_samples == 3
    assert math.isclose(stats.max_backward_step, 0.3)


def test_velocity_follows_steady_motion(tmp_path: Path) -> None:
    """Steady forward motion at 0.5 m/s reads as 0.5 m/s on every sample."""
    times = [0.25 * i for i in range(21)]
    lines = [odom(0.5 * t, 0, 0, t) for t in times]

    samples = list(read_samples(write_log(tmp_path, lines)))

    for sample in samples:
        assert math.isclose(sample.linear, 0.5), sample
        assert sample.angular == 0.0


def test_velocity_tolerates_bunched_stamps(tmp_path: Path) -> None:
    """Poses logged with one shared stamp do not produce a speed spike."""
    stamps = [0.0, 0.5, 0.5, 0.5, 0.5, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    true_times = [0.5 * i for i in range(len(stamps))]
    lines = [odom(0.5 * t, 0, 0, s) for t, s in zip(true_times, stamps, strict=True)]

    samples = list(read_samples(write_log(tmp_path, lines)))

    adjacent_speed = 0.25 / MIN_TIME_STEP
    assert adjacent_speed > 100
    for sample in samples:
        assert 0.1 < sample.linear < 1.0, sample


def test_velocity_is_signed_and_turns(tmp_path: Path) -> None:
    """Reversing gives a negative linear speed and turning an angular one."""
    lines = [odom(-0.2 * t, 0, 0.1 * t, t) for t in range(6)]

    samples = list(read_samples(write_log(tmp_path, lines)))

    assert all(s.linear < -0.15 for s in samples)
    assert all(math.isclose(s.angular, 0.1) for s in samples)


def test_single_sample_has_zero_velocity(tmp_path: Path) -> None:
    """A log with one pose yields that pose at rest."""
    [sample] = read_samples(write_log(tmp_path, [odom(1, 1, 1, 5.0)]))

    assert sample.linear == 0.0
    assert sample.angular == 0.0


def test_path_length_of_polyline() -> None:
    """path_length sums the straight segments between consecutive samples."""
    points = [(0.0, 0.0), (3.0, 4.0), (3.0, 0.0)]
    samples = [ReplaySample(i, x, y, 0.0, 0.0, 0.0) for i, (x, y) in enumerate(points)]

    assert path_length(samples) == 9.0
    assert path_length(samples[:1]) == 0.0
    assert path_length([]) == 0.0


def test_summary_of_empty_log(tmp_path: Path) -> None:
    """A log without poses summarizes to zero samples and no times."""
    summary = summarize_log(write_log(tmp_path, ["# nothing here"]))

    assert summary.samples == 0
    assert summary.first_log_time is None
    assert summary.last_log_time is None
    assert summary.path_length == 0.0


def test_bundled_summary_counts() -> None:
    """The bundled log's summary matches the line counts of the file."""
    summary = summarize_log(intel_lab_log())
    stats = summary.stats

    assert stats.line_counts == {
        "#": 2,
        "PARAM": 2,
        "ODOM": 14_541,
        "FLASER": 910,
        "NEFF": 910,
    }
    assert stats.skipped_lines == 914
    assert stats.malformed_lines == 0
    assert stats.repeated_poses == BUNDLED_SCANS
    assert stats.replaced_poses == BUNDLED_SCANS
    assert summary.samples == BUNDLED_SAMPLES
    assert summary.scans == BUNDLED_SCANS
    assert summary.first_log_time == 0.000246
    assert summary.last_log_time is not None
    assert 2691.3 <= summary.last_log_time < 2692.3
    assert math.isclose(summary.path_length, path_length(bundled_samples()))


def test_bundled_timestamps_strictly_increase() -> None:
    """Every bundled sample is stamped at least MIN_TIME_STEP after the one before."""
    times = [s.log_time for s in bundled_samples()]

    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(steps) >= MIN_TIME_STEP * 0.999


def test_bundled_retiming_stays_small() -> None:
    """No bundled sample is moved more than one second from its file time."""
    stats = ReadStats()
    for _ in read_samples(intel_lab_log(), stats):
        pass

    assert 0.0 < stats.max_backward_step <= 0.9 + 1e-9
    assert stats.max_time_shift < 1.0


def test_bundled_speeds_are_plausible() -> None:
    """No bundled sample moves faster than 2 m/s or turns faster than 2 rad/s."""
    samples = bundled_samples()

    assert max(abs(s.linear) for s in samples) <= 2.0
    assert max(abs(s.angular) for s in samples) <= 2.0


def test_bundled_path_matches_raw_lines() -> None:
    """The bundled path length matches the raw poses under the same policy."""
    lines = [t for t in bundled_lines() if t[0] in ("ODOM", "FLASER")]
    points: list[tuple[float, float]] = []
    for index, tokens in enumerate(lines):
        if tokens[0] == "FLASER":
            count = int(tokens[1])
            points.append((float(tokens[count + 5]), float(tokens[count + 6])))
            continue
        after_scan = index > 0 and lines[index - 1][0] == "FLASER"
        before_scan = index + 1 < len(lines) and lines[index + 1][0] == "FLASER"
        if not (after_scan or before_scan):
            points.append((float(tokens[1]), float(tokens[2])))

    expected = polyline_length(points)
    actual = path_length(bundled_samples())

    assert len(points) == BUNDLED_SAMPLES
    assert math.isclose(actual, expected, rel_tol=0.005)


def test_bundled_path_near_nonzero_odom_path() -> None:
    """The bundled path is within 2% of the path of ODOM lines stamped non-zero."""
    points = [
        (float(t[1]), float(t[2]))
        for t in bundled_lines()
        if t[0] == "ODOM" and float(t[7]) != 0.0
    ]

    expected = polyline_length(points)
    actual = path_length(bundled_samples())

    assert 530 < expected < 540
    assert math.isclose(actual, expected, rel_tol=0.02)


def test_bundled_close_range_scans_match_raw() -> None:
    """The scans with a return under 0.5 m are the same count as in the raw file."""
    raw_ranges = [
        [float(r) for r in t[2 : 2 + int(t[1])]]
        for t in bundled_lines()
        if t[0] == "FLASER"
    ]
    expected = sum(1 for ranges in raw_ranges if min(ranges) < 0.5)
    scans = [s.ranges for s in bundled_samples() if s.ranges is not None]
    actual = sum(1 for ranges in scans if min(ranges) < 0.5)

    assert expected == 94
    assert actual == expected
    assert len(scans) == BUNDLED_SCANS


def test_bundled_no_return_values_sit_above_constant() -> None:
    """Every bundled range is either a return below 30 m or a no-return value."""
    scans = [s.ranges for s in bundled_samples() if s.ranges is not None]
    values = [r for ranges in scans for r in ranges]

    no_returns = [r for r in values if r >= NO_RETURN_RANGE]
    returns = [r for r in values if r < NO_RETURN_RANGE]
    assert all(r < 82.0 for r in no_returns)
    assert len(no_returns) == 4172
    assert max(returns) < 30.0
    assert all(len(ranges) == 180 for ranges in scans)
