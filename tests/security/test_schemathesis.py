"""Schema-driven fuzzing of the REST API: no generated request may cause a 5xx."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from fleethub.api.app import create_app
from fleethub.security.principals import CLI, Role
from fleethub.security.store import CredentialStore
from fleethub.settings import Settings
from fleethub.storage import migrate
from fleethub.storage.sql import create_engine
from security.support import secure_settings

# Examples per operation: enough to reach every parameter's edge cases while
# keeping the whole run to a few seconds.
EXAMPLES_PER_OPERATION = 12
# Server-sent event streams never end, so a fuzzed call would wait forever;
# the stream's filters are tested on a live server instead.
ENDLESS_OPERATIONS = {"/api/stream"}


async def _prepare_database(settings: Settings) -> str:
    """Create the schema and return a new admin key."""
    engine = create_engine(settings.database_url)
    try:
        await migrate.upgrade(engine)
        _, key = await CredentialStore(engine).create_api_key("fuzz", Role.ADMIN, CLI)
    finally:
        await engine.dispose()
    return key


@pytest.fixture
def admin_key(tmp_path: Path) -> tuple[Settings, str]:
    settings = secure_settings(tmp_path, rate_limit_api="1000000/second")
    return settings, asyncio.run(_prepare_database(settings))


@pytest.fixture
def api_schema(admin_key: tuple[Settings, str]) -> schemathesis.BaseSchema:
    settings, key = admin_key
    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(settings), headers=headers
    )
    return schema


def test_no_server_errors(
    api_schema: schemathesis.BaseSchema, admin_key: tuple[Settings, str]
) -> None:
    """Requests generated from the OpenAPI description never get a 5xx."""
    headers = {"Authorization": f"Bearer {admin_key[1]}"}
    operations = [
        operation
        for operation in (result.ok() for result in api_schema.get_all_operations())
        if operation.path not in ENDLESS_OPERATIONS
    ]
    statuses: Counter[int] = Counter()
    assert len(operations) >= 10
    for operation in operations:
        positive = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
        _fuzz(positive, headers, statuses)
        try:
            negative = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
            _fuzz(negative, headers, statuses)
        except Unsatisfiable:
            pass  # the operation has no input that could be made invalid
    assert statuses[200] > 0
    assert statuses[401] == 0


def _fuzz(
    strategy: st.SearchStrategy[schemathesis.Case],
    headers: dict[str, str],
    statuses: Counter[int],
) -> None:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=headers, checks=[not_a_server_error])
        statuses[response.status_code] += 1

    run()
