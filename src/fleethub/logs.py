"""Logging set-up: JSON lines in production, readable lines in development.

Configure once, at the entry point. Modules log constant event names with
variable data in ``extra``, for example
``logger.info("robot_connected", extra={"robot_id": robot_id})``; both
formats print those fields.

Fields that belong to the work in progress rather than to one call (the
request id, the robot id, the component) are bound once with
:func:`log_context` and appear in every line logged inside it, including
lines from tasks started inside it. An ``extra`` field of the same name wins.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

# Immutable per context: binding copies the mapping, so a task started inside
# a ``log_context`` block keeps the fields it saw when it started.
_log_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "fleethub_log_context", default=MappingProxyType({})
)


def bind_log_context(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add ``fields`` to every log line of the current context until reset."""
    return _log_context.set({**_log_context.get(), **fields})


def reset_log_context(token: Token[Mapping[str, Any]]) -> None:
    """Undo the :func:`bind_log_context` call that returned ``token``."""
    _log_context.reset(token)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind ``fields`` to every log line written inside the ``with`` block."""
    token = bind_log_context(**fields)
    try:
        yield
    finally:
        reset_log_context(token)


def current_log_context() -> Mapping[str, Any]:
    """Return the fields bound in the current context."""
    return _log_context.get()


class ContextFilter(logging.Filter):
    """Copy the bound context fields onto each record that passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _log_context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    """``time level logger event key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        pairs = " ".join(f"{key}={value!r}" for key, value in _fields(record).items())
        message = record.getMessage()
        line = f"{time} {record.levelname:<7} {record.name} {message} {pairs}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def build_handler(
    fmt: str = "console", stream: IO[str] | None = None
) -> logging.Handler:
    """Return a handler writing ``fmt`` lines (with context fields) to ``stream``.

    ``stream`` defaults to stderr.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Send every log record to stderr in the chosen format."""
    handler = build_handler(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def should_log_repeat(count: int) -> bool:
    """Return True on the 1st, 2nd, 4th, 8th ... occurrence, so a flood logs little."""
    return count > 0 and count & (count - 1) == 0
