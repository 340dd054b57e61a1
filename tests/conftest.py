"""Fixtures shared by every test: real PostgreSQL and Redis, a fresh database per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.support.services import Services, execute_autocommit, find_services
from timers.config import Settings
from timers.migrations import upgrade
from timers.store import TimerStore, database_engine

API_KEY = "test-api-key"
_counter = itertools.count()


def admin_execute(services: Services, sql: str) -> None:
    execute_autocommit(services.postgres_url, sql)


def create_database(services: Services, template: str | None = None) -> str:
    name = f"timers_test_{os.getpid()}_{next(_counter)}"
    clause = f' TEMPLATE "{template}"' if template else ""
    admin_execute(services, f'CREATE DATABASE "{name}"{clause}')
    return name


def drop_database(services: Services, name: str) -> None:
    admin_execute(services, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    found = find_services(tmp_path_factory.mktemp("services"))
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
    assert engine.pool.checkedout() == 0, "a pooled connection was left checked out"
    engine.dispose()


@pytest.fixture
def settings(database_url: str, services: Services) -> Settings:
    return Settings(database_url=database_url, redis_url=services.redis_url, api_key=API_KEY)
