"""Fixtures of the unit tests: no service is reached. The API runs on the in-memory twin of the
store (`timers.testing.InMemoryStore`, kept honest by tests/contract), under the same names as the
PostgreSQL fixtures of tests/conftest.py, so an API test reads the same at either level."""

from __future__ import annotations

import pytest

from tests.support.services import API_KEY, LOCAL_NETWORKS
from timers.config import Settings
from timers.testing import InMemoryStore

# Never connected to: every app a unit test builds is given its store.
UNREACHABLE_DATABASE = "postgresql://nobody@127.0.0.1:1/unused"
UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture
def database_url() -> str:
    return UNREACHABLE_DATABASE


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
def settings() -> Settings:
    """As tests/conftest.py's, with brokers that are never reached (the API only checks that a
    task broker is configured; it publishes nothing)."""
    return Settings(
        database_url=UNREACHABLE_DATABASE,
        redis_url=UNREACHABLE_BROKER,
        api_key=API_KEY,
        allowed_networks=(LOCAL_NETWORKS,),
        task_broker_url="redis://127.0.0.1:1/5",
        celery_tasks=("shop.tasks.*",),
        celery_queues=("shop", "celery"),
    )
