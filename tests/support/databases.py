"""Creating and dropping the tests' databases on the shared PostgreSQL."""

from __future__ import annotations

import itertools
import os

from tests.support.services import Services, execute_autocommit

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
