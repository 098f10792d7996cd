"""Watching fleethub itself: metrics, readiness, robot health, request context."""
