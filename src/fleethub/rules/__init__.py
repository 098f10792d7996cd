"""Rules turn robot states into events."""
