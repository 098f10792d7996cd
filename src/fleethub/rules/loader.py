"""Read rules from a TOML file: the bundled defaults or the one a setting names."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fleethub.errors import InvalidInput
from fleethub.rules.model import Rule

DEFAULT_RULES_FILE = "default_rules.toml"


def default_rules_text() -> str:
    """Return the text of the rules file bundled with fleethub."""
    return resources.files("fleethub.rules").joinpath(DEFAULT_RULES_FILE).read_text()


def load_rules(path: Path | None, heartbeat_timeout_s: float) -> list[Rule]:
    """Parse the rules in ``path`` (the bundled file when None).

    Raises :class:`InvalidInput` naming the file and the first broken rule.
    """
    source = str(path) if path is not None else DEFAULT_RULES_FILE
    try:
        text = path.read_text() if path is not None else default_rules_text()
        document = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(
            f"Rules file {source!r} cannot be read: {exc}.",
            code="invalid_rules_file",
            path=source,
        ) from None
    return parse_rules(document, source, heartbeat_timeout_s)


def parse_rules(
    document: dict[str, Any], source: str, heartbeat_timeout_s: float
) -> list[Rule]:
    """Validate the ``[[rules]]`` tables of a parsed rules file."""
    entries = document.get("rules", [])
    if not isinstance(entries, list):
        raise InvalidInput(
            f"Rules file {source!r} needs [[rules]] tables.",
            code="invalid_rules_file",
            path=source,
        )
    rules: list[Rule] = []
    for index, entry in enumerate(entries):
        try:
            rule = Rule.model_validate(entry)
        except ValidationError as exc:
            raise InvalidInput(
                f"Rule {index} in {source!r} is invalid: {_first_problem(exc)}",
                code="invalid_rules_file",
                path=source,
                index=index,
                problems=validation_problems(exc),
            ) from None
        rules.append(rule.with_default_timeout(heartbeat_timeout_s))
    _check_unique([rule.id for rule in rules], source)
    return rules


def validation_problems(exc: ValidationError) -> list[dict[str, Any]]:
    """Return pydantic's errors as ``{"location", "message"}`` entries."""
    return [
        {"location": [str(part) for part in error["loc"]], "message": error["msg"]}
        for error in exc.errors()
    ]


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    return f"{location}: {error['msg']}" if location else error["msg"]


def _check_unique(rule_ids: list[str], source: str) -> None:
    seen: set[str] = set()
    for rule_id in rule_ids:
        if rule_id in seen:
            raise InvalidInput(
                f"Rule id {rule_id!r} appears twice in {source!r}.",
                code="invalid_rules_file",
                path=source,
                rule_id=rule_id,
            )
        seen.add(rule_id)
