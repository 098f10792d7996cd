"""Checks on command types and parameters before anything is stored.

Parameters are free-form JSON objects so that vendors can add their own
command types. Every number in them must be finite, because Python's JSON
parser accepts ``NaN`` and ``Infinity`` although RFC 8259 does not. The types
fleethub itself sends (``go_to``, ``stop``, ``charge``) have their fields
checked.
"""

from __future__ import annotations

import math
import re
from typing import Any

from fleethub.errors import InvalidInput

COMMAND_TYPE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_COORDINATE_M = 1e6
MAX_PARAMS_DEPTH = 8


def validate_command(command_type: str, params: dict[str, Any]) -> None:
    """Raise :class:`InvalidInput` unless the type and parameters are acceptable."""
    if not COMMAND_TYPE.fullmatch(command_type):
        raise InvalidInput(
            f"Command type {command_type[:80]!r} must be 1 to 64 characters from "
            "A-Z a-z 0-9 _ . -.",
            code="invalid_command_type",
        )
    _check_finite(params, "params", 0)
    if command_type == "go_to":
        _check_go_to(params)
    elif command_type in ("stop", "charge") and params:
        raise InvalidInput(
            f"Command {command_type!r} takes no parameters; got {sorted(params)}.",
            code="invalid_params",
        )


def _check_go_to(params: dict[str, Any]) -> None:
    for name in ("x", "y"):
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(
                f"Command 'go_to' needs a number in params.{name}; got {value!r}.",
                code="invalid_params",
                field=f"params.{name}",
            )
        if abs(value) > MAX_COORDINATE_M:
            raise InvalidInput(
                f"params.{name} = {value} is outside ±{MAX_COORDINATE_M:g} m.",
                code="invalid_params",
                field=f"params.{name}",
            )


def _check_finite(value: Any, path: str, depth: int) -> None:
    if depth > MAX_PARAMS_DEPTH:
        raise InvalidInput(
            f"Parameters nest deeper than {MAX_PARAMS_DEPTH} levels at {path}.",
            code="invalid_params",
            field=path,
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(
            f"{path} is {value}; only finite numbers are allowed.",
            code="invalid_params",
            field=path,
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{path}[{index}]", depth + 1)
