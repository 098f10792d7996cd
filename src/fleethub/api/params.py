"""Query parameters shared by the history endpoints."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from fleethub.errors import InvalidInput

# Row ids and sequence numbers are 64-bit signed integers in both databases; a
# page cursor above this could never match and would overflow the driver.
MAX_ROW_ID = 2**63 - 1


def aware(value: datetime | None, name: str) -> datetime | None:
    """Reject a query time without a time zone; return it in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidInput(
            f"Query parameter {name!r} needs a time zone, e.g. '2026-01-01T00:00:00Z'.",
            code="timestamp_missing_timezone",
            parameter=name,
        )
    return value.astimezone(UTC)


def check_range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise InvalidInput(
            "Parameter 'end' must be later than 'start'.", code="invalid_time_range"
        )


def encode_time_cursor(value: datetime) -> str:
    return base64.urlsafe_b64encode(value.isoformat().encode()).decode().rstrip("=")


def decode_time_cursor(cursor: str | None) -> datetime | None:
    """Decode an opaque cursor from a previous page, or raise ``invalid_cursor``."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = datetime.fromisoformat(base64.urlsafe_b64decode(padded).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(
            "Cursor is invalid; pass 'next_cursor' from the previous page unchanged.",
            code="invalid_cursor",
        ) from None
    if value.tzinfo is None:
        raise InvalidInput("Cursor is invalid.", code="invalid_cursor")
    return value
