"""Size checks on JSON bodies and query strings, for every route at once.

Routes validate their own fields. These checks run before any route parses
its input, and bound string and array lengths, nesting depth and page sizes.
Each violation raises :class:`InvalidInput` with its own code.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from fleethub.errors import InvalidInput
from fleethub.settings import Settings

PAGE_SIZE_PARAMETERS = frozenset({"limit", "page_size"})


def is_json(content_type: str | None) -> bool:
    """Return True for ``application/json`` and ``application/*+json``."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _reject_constant(name: str) -> Any:
    raise InvalidInput(
        f"JSON body contains {name}, which RFC 8259 does not allow.",
        code="invalid_json",
    )


def check_json_body(body: bytes, settings: Settings) -> None:
    """Raise InvalidInput when a JSON body is too long, too deep or not strict.

    A body that is not JSON at all passes, so that the route reports it with
    its usual validation error.
    """
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise _too_deep(settings) from None
    except ValueError:
        return
    _walk(document, settings)


def _walk(document: Any, settings: Settings) -> None:
    """Check every value iteratively, so a deep document cannot exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(document, "$", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_string(value, path, settings)
            continue
        if not isinstance(value, (list, dict)):
            continue
        if depth > settings.max_json_depth:
            raise _too_deep(settings)
        if isinstance(value, list):
            _check_list(value, path, settings)
            stack.extend(
                (item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)
            )
        else:
            _check_list(list(value), path, settings)
            for key, item in value.items():
                _check_string(key, f"{path} key", settings)
                stack.append((item, f"{path}.{key}", depth + 1))


def _check_string(value: str, path: str, settings: Settings) -> None:
    _check_no_nul(value, path)
    if len(value) > settings.max_string_length:
        raise InvalidInput(
            f"String at {path[:200]} has {len(value)} characters; the limit is "
            f"{settings.max_string_length}.",
            code="string_too_long",
            path=path[:200],
            limit=settings.max_string_length,
        )


def _check_no_nul(value: str, path: str) -> None:
    # PostgreSQL text cannot store U+0000; without this check the insert or
    # the query parameter fails inside the database driver with a 500.
    if "\x00" in value:
        raise InvalidInput(
            f"String at {path[:200]} contains the NUL character (U+0000), which "
            "fleethub does not accept; remove it.",
            code="invalid_character",
            path=path[:200],
        )


def check_path(path: str) -> None:
    """Raise InvalidInput when the percent-decoded request path contains NUL."""
    _check_no_nul(path, "the request path")


def _check_list(value: list[Any], path: str, settings: Settings) -> None:
    if len(value) > settings.max_list_length:
        raise InvalidInput(
            f"Array or object at {path[:200]} has {len(value)} entries; the limit is "
            f"{settings.max_list_length}.",
            code="list_too_long",
            path=path[:200],
            limit=settings.max_list_length,
        )


def _too_deep(settings: Settings) -> InvalidInput:
    return InvalidInput(
        f"JSON body is nested deeper than {settings.max_json_depth} levels.",
        code="json_too_deep",
        limit=settings.max_json_depth,
    )


def check_query(query_string: bytes, settings: Settings) -> None:
    """Raise InvalidInput for a long query or a page larger than ``max_page_size``."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    if len(pairs) > settings.max_list_length:
        raise InvalidInput(
            f"Query has {len(pairs)} parameters; the limit is "
            f"{settings.max_list_length}.",
            code="list_too_long",
            limit=settings.max_list_length,
        )
    for name, value in pairs:
        _check_string(value, f"query parameter {name[:64]!r}", settings)
        if name in PAGE_SIZE_PARAMETERS:
            _check_page_size(name, value, settings)


def _check_page_size(name: str, value: str, settings: Settings) -> None:
    try:
        size = int(value)
    except ValueError:
        return  # the route reports a value that is not a number
    if size > settings.max_page_size:
        raise InvalidInput(
            f"Query parameter {name!r} is {size}; the largest page is "
            f"{settings.max_page_size}.",
            code="page_size_too_large",
            parameter=name,
            limit=settings.max_page_size,
        )
