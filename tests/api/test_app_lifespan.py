"""The app's lifespan: services up and down, and the start-up freeze."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from fleethub.api.app import create_app
from fleethub.settings import Settings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Give the test a collector with nothing frozen, and leave it that way."""
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
async def test_freeze_startup_objects(settings: Settings) -> None:
    """A serving process freezes the objects that start-up built."""
    app = create_app(settings, migrate_schema=True, freeze_startup_objects=True)

    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()

    assert frozen > 10_000


@pytest.mark.usefixtures("unfrozen")
async def test_no_freeze_by_default(settings: Settings) -> None:
    """Apps built for tests and embedding leave the collector alone."""
    app = create_app(settings, migrate_schema=True)

    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()

    assert frozen == 0
