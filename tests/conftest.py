"""Fixtures shared by every test: real PostgreSQL and Redis, a fresh database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import skips
from tests.support.databases import create_database, drop_database
from tests.support.services import (
    API_KEY,
    LOCAL_NETWORKS,
    TASK_BROKER_DATABASE,
    Services,
    find_services,
)
from timers.config import Settings
from timers.migrations import upgrade
from timers.store import TimerStore, database_engine


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    # Under pytest-xdist (make test), the first worker uses the configured or local Redis and
    # every other worker a server of its own, as the suites pick fixed numbered databases.
    own_redis = os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0"
    found = find_services(tmp_path_factory.mktemp("services"), own_redis=own_redis)
    yield found
    found.stop()


@pytest.fixture(scope="session")
def template_database(services: Services) -> Iterator[str]:
    """A database migrated to head once per session; each test copies it."""
    name = create_database(services)
    upgrade(services.database_url(name))
    yield name
    drop_database(services, name)


@pytest.fixture
def database_url(services: Services, template_database: str) -> Iterator[str]:
    """A fresh, migrated, empty database for this test alone."""
    name = create_database(services, template_database)
    yield services.database_url(name)
    drop_database(services, name)


@pytest.fixture
def store(database_url: str) -> Iterator[TimerStore]:
    engine = database_engine(database_url)
    yield TimerStore(engine)
    # Every store method is one transaction that gives its connection back.
    left = engine.pool.checkedout()  # type: ignore[attr-defined]
    assert left == 0, "a pooled connection was left checked out"
    engine.dispose()


@pytest.fixture
def settings(database_url: str, services: Services) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=services.redis_url,
        api_key=API_KEY,
        allowed_networks=(LOCAL_NETWORKS,),
        # `celery` callbacks go to an application's broker of their own (another Redis database),
        # for the tasks and queues of the example shop only.
        task_broker_url=services.redis_database(TASK_BROKER_DATABASE),
        celery_tasks=("shop.tasks.*",),
        celery_queues=("shop", "celery"),
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any) -> Iterator[None]:
    """End with one line, after pytest's own summaries: the test groups that did not run and the
    command that enables each."""
    yield
    reasons = [
        str(report.longrepr[2])
        for report in terminalreporter.stats.get("skipped", [])
        if isinstance(report.longrepr, tuple)
    ]
    markers = [
        name
        for item in terminalreporter.stats.get("deselected", [])
        for name in skips.MARKED
        if item.get_closest_marker(name) is not None
    ]
    line = skips.summary_line(reasons, markers)
    if line is not None:
        terminalreporter.write_line(line, yellow=True)
