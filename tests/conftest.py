"""Settings shared by the whole test suite.

Tests that are not about security start their servers with authentication
switched off, so that they can call every route without a credential. That
is allowed because test servers listen on 127.0.0.1, and ``Settings`` reads
this default from the environment. Security tests pass ``auth_enabled=True``
explicitly and get credentials from ``auth_helpers`` (this folder is on
``sys.path`` because pytest inserts the folder of every ``conftest.py``).
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("FLEETHUB_AUTH_ENABLED", "false")
