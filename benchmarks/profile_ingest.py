"""Profile fleethub's ingest with py-spy while the bench load runs against it.

Starts ``fleethub serve`` on a fresh database, runs one load step of
``--rate`` msg/s from ``--robots`` robots, records ``--seconds`` of py-spy
samples of the server (raw collapsed stacks) and prints the hottest frames.
Needs py-spy (``pip install -e '.[bench]'``) and permission to trace the
server process. Run from the repository root:
``python benchmarks/profile_ingest.py --backend sqlite --rate 8000``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from fleethub.bench.databases import DEFAULT_POSTGRES_URL, fresh_database
from fleethub.bench.load import LoadPlan, load_main
from fleethub.bench.processes import ChildProcess, ignore_event
from fleethub.bench.servers import ServerSpec, start_server


def profile(args: argparse.Namespace, work: Path) -> None:
    with fresh_database(args.backend, work, DEFAULT_POSTGRES_URL) as url:
        # As in ``fleethub bench``: the per-robot rate limits that come with
        # authentication would cap the load by design.
        spec = ServerSpec("fleethub", url, env={"FLEETHUB_AUTH_ENABLED": "false"})
        with start_server(spec, work) as server:
            step_s = args.seconds + 4
            plan = LoadPlan(server.ws_url, args.robots, step_s, rates=[args.rate])
            load = ChildProcess(load_main, plan).start()
            load.wait_for({"step_started"}, ignore_event, 120)
            time.sleep(1)  # let the step reach its rate before sampling
            spy = subprocess.run(
                [
                    _py_spy(), "record", "--pid", str(server.pid),
                    "--duration", str(args.seconds), "--rate", "100",
                    "--nonblocking", "--format", "raw", "--output", str(args.output),
                ],
                check=False,
            )  # fmt: skip
            result = load.result(ignore_event, 300)
    if spy.returncode != 0:
        sys.exit(f"py-spy failed with code {spy.returncode}.")
    step = result.steps[0]
    print(f"acked {step.ack_rate:,.0f} msg/s, p99 {step.latency.p99_ms:,.0f} ms")
    print_hottest(args.output)
    print()
    print_split(args.output)


def _py_spy() -> str:
    """Return py-spy from this interpreter's environment, else from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else "py-spy"


def print_hottest(path: Path, count: int = 25) -> None:
    """Print the frames most often on top of the stack, idle waits excluded."""
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, samples = line.rsplit(" ", 1)
        leaf = stack.split(";")[-1]
        if leaf.startswith("Runner.run") or "aiosqlite/core.py:59" in leaf:
            continue  # the event loop or the SQLite thread waiting for work
        leaves[leaf] += int(samples)
    busy = sum(leaves.values())
    for leaf, samples in leaves.most_common(count):
        print(f"{samples / busy:6.1%}  {leaf}")


# Parts of the server, each named by frames that mark it anywhere in a stack.
# A stack counts for the first part that matches, so the more specific parts
# come first (the pipeline runs inside the link's receive loop).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    (
        "database thread (SQLite inserts, commit)",
        ("_connection_worker_thread", "SqliteTelemetryWriter._write"),
    ),
    ("stream hub (fan-out to operators)", ("fleethub/stream/",)),
    ("pipeline: clock reads", ("utcnow",)),
    ("pipeline: live state", ("LiveState.update",)),
    ("pipeline: rules", ("RuleEngine.",)),
    ("pipeline: bus message", ("StateMessage", "bus.publish", "Bus.publish")),
    ("pipeline: observers (missions)", ("observe_state",)),
    ("pipeline: TelemetryRow", ("TelemetryRow.from_state",)),
    ("pipeline: rest (checks, submit)", ("IngestPipeline.handle_state",)),
    ("frame decoding (msgspec)", ("decode_robot_frame",)),
    (
        "writer: rows to driver records",
        ("sqlite_values", "_sqlite_record", "_encode_row", "records"),
    ),
    ("writer: COPY on the event loop (asyncpg)", ("asyncpg/",)),
    ("writer: acknowledgements, batch handling", ("BatchWriter.",)),
    ("robot link sender (acks to robots)", ("run_sender",)),
    (
        "ASGI receive path (queue, Starlette, middlewares, receive loop)",
        (
            "WebSocket.receive",
            "_receive_loop",
            "Queue.get",
            "Middleware",
            # The same work when the link reads from the raw-frame inbox.
            "_inbox_loop",
            "Inbox.get",
        ),
    ),
    ("uvicorn websockets protocol (parse, write)", ("WebSocketsSansIOProtocol",)),
]


def print_split(path: Path) -> None:
    """Print the share of busy samples per part of the server."""
    shares: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, samples = line.rsplit(" ", 1)
        leaf = stack.split(";")[-1]
        if leaf.startswith("Runner.run") or "aiosqlite/core.py:59" in leaf:
            continue
        part = next(
            (name for name, marks in PARTS if any(m in stack for m in marks)),
            "other",
        )
        shares[part] += int(samples)
    busy = sum(shares.values())
    print(f"{busy} busy samples")
    for part, samples in shares.most_common():
        print(f"{samples / busy:6.1%}  {part}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rate", type=float, default=8000.0, help="Total msg/s.")
    parser.add_argument("--robots", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=8, help="Sampling time.")
    parser.add_argument("--output", type=Path, default=Path("ingest-profile.txt"))
    parser.add_argument(
        "--split-only", action="store_true", help="Only analyse --output again."
    )
    arguments = parser.parse_args()
    if arguments.split_only:
        print_hottest(arguments.output)
        print()
        print_split(arguments.output)
        sys.exit()
    with tempfile.TemporaryDirectory(prefix="fleethub-profile-") as directory:
        profile(arguments, Path(directory))
