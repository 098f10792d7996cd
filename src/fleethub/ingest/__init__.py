"""Ingest: validate robot states, keep live state, store telemetry, raise events."""
