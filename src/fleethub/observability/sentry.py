"""Report unexpected errors to Sentry when ``sentry_dsn`` is set.

sentry-sdk enables its Starlette and FastAPI integrations by itself when those
packages are installed, and they capture exceptions that escape a request.
Its logging integration turns every ERROR log record into an event, so caught
errors logged with ``logger.exception`` reach Sentry too. The request
middleware tags each request's scope with its ``request_id``, the same id
that the error body and the log lines carry.

No credentials leave the process: request bodies, cookies, query strings,
credential headers and the command line are removed before sending, local
variables are not collected, and sentry-sdk's own scrubber blanks any field
whose name looks like a secret.

sentry-sdk keeps one client per process, so the last app to start with a DSN
wins and closing any app closes that client.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fleethub import __version__
from fleethub.settings import Settings

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

logger = logging.getLogger(__name__)

# Compared in lower case. sentry-sdk blanks most of these already because its
# default sends no personal data; removing them keeps even their names out.
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "sec-websocket-protocol",
    }
)


def init_sentry(settings: Settings) -> bool:
    """Start the Sentry client if a DSN is configured; return whether it started."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.scrubber import EventScrubber

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_environment,
        release=f"fleethub@{__version__}",
        include_local_variables=False,
        max_request_body_size="never",
        event_scrubber=EventScrubber(recursive=True),
        before_send=scrub_event,
    )
    logger.info("sentry_enabled", extra={"environment": settings.sentry_environment})
    return True


def close_sentry(timeout_s: float = 2.0) -> None:
    """Send what is queued (waiting at most ``timeout_s``) and stop the client."""
    import sentry_sdk

    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=timeout_s)


def tag_request(request_id: str) -> None:
    """Tag the current request's Sentry scope with its id, if Sentry is on."""
    import sentry_sdk

    if sentry_sdk.get_client().is_active():
        sentry_sdk.get_isolation_scope().set_tag("request_id", request_id)


def scrub_event(event: Event, _hint: Hint) -> Event:
    """Remove the request parts that may carry credentials from ``event``."""
    request = event.get("request")
    if isinstance(request, dict):
        for key in ("query_string", "cookies", "data"):
            request.pop(key, None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {
                name: value
                for name, value in headers.items()
                if name.lower() not in SENSITIVE_HEADERS
            }
        url = request.get("url")
        if isinstance(url, str):
            request["url"] = url.split("?", 1)[0]
    extra = event.get("extra")
    if isinstance(extra, dict):
        # Command-line options may hold a database URL with its password.
        extra.pop("sys.argv", None)
    return event
