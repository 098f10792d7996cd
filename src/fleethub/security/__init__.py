"""Authentication, authorization, rate limits, input limits and the audit log.

Every HTTP request and WebSocket handshake passes through one ASGI middleware
(:mod:`fleethub.security.middleware`) before it reaches a route, so a route
added later is protected without any change to it. The middleware:

1. looks up the access rule for the method and path in
   :mod:`fleethub.security.policy` (public, a minimum role, or the robot link);
2. authenticates the caller from ``Authorization: Bearer``, ``X-API-Key`` or,
   on WebSocket handshakes only, the ``access_token`` query parameter: an API
   key, a robot credential or a JWT;
3. checks the role (admin > operator > viewer) or, on ``/ws/robots/{id}``,
   that the robot credential belongs to that robot id;
4. applies the caller's rate limit, then the body and JSON size limits;
5. writes an audit row for every request that is not GET, HEAD or OPTIONS.
"""
