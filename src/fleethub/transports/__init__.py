"""Robot links: the WebSocket protocol (and, later, other transports)."""
