"""Benchmark harness: a real server process driven from a separate load process.

The harness starts the server under test (fleethub or a baseline server) as a
subprocess on a free loopback port, drives it over real WebSockets and HTTP
from another process, and samples the server's CPU time and memory from
``/proc``. Every figure is reported next to baselines measured in the same
run, because absolute numbers drift on a shared machine.
"""
