"""The event bus: messages between parts of one process, or between processes."""
