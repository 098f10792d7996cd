"""Readers that turn recorded robot logs into samples for ``fleethub replay``."""
