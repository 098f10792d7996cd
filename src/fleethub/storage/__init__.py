"""Durable storage: robots, telemetry, events and commands."""
