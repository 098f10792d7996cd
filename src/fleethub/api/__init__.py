"""The HTTP API: REST routes, WebSocket endpoints and error mapping."""
