"""Shared test set-up: the shipped settings, the fixture cases and the ``--update-goldens`` flag."""

from __future__ import annotations

import pytest

import wor_bridge
from tests.loopback_bridge import bridge, receivers  # noqa: F401 - fixtures shared by the modules
from tests.pg import pg_dsn, pg_sealed_store, pg_store  # noqa: F401 - PostgreSQL for the store contract tests
from wor_bridge.core.settings import Settings


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--update-goldens`` to rewrite expected outputs (review the diff afterwards)."""
    parser.addoption("--update-goldens", action="store_true", help="rewrite golden files")


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The shipped example configuration (config/wor-bridge.toml)."""
    return wor_bridge.load_settings()


@pytest.fixture(scope="session")
def update_goldens(request: pytest.FixtureRequest) -> bool:
    """True when the run should rewrite golden files instead of comparing."""
    return bool(request.config.getoption("--update-goldens"))
