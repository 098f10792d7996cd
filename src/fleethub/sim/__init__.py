"""Simulated robots that speak the real protocol through the client library."""
