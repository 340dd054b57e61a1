"""`alembic upgrade head` gives exactly the models' schema, and downgrade undoes it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from tests.support.databases import create_database, drop_database
from tests.support.services import Services
from timers.migrations import downgrade, upgrade
from timers.schema import metadata
from timers.store import database_engine


@pytest.fixture
def empty_database_url(services: Services) -> Iterator[str]:
    name = create_database(services)
    yield services.database_url(name)
    drop_database(services, name)


def test_upgrade_head_gives_exactly_the_models_schema(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = database_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            indexes = {ix["name"]: ix for ix in inspect(conn).get_indexes("timers")}
            trigger = (
                conn.execute(
                    text(
                        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'timers'::regclass "
                        "AND NOT tgisinternal"
                    )
                )
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert diff == []
    pending_index = indexes["ix_timers_pending_execute_at"]
    assert pending_index["column_names"] == ["execute_at"]
    assert "status = 'pending'" in pending_index["dialect_options"]["postgresql_where"]
    assert sorted(trigger) == [
        "timers_label_insert",
        "timers_label_update",
        "timers_notify_change",
        "timers_touch_updated_at",
        "timers_unlabel",
        "timers_unlabel_all",
    ]


def test_downgrade_removes_everything_and_upgrade_again_works(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    downgrade(empty_database_url, "base")
    engine = database_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == ["alembic_version"]
            functions = conn.execute(
                text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'timers\\_%'")
            ).scalar_one()
            assert functions == 0
    finally:
        engine.dispose()
    upgrade(empty_database_url)


def test_timers_already_there_belong_to_the_principal_default(empty_database_url: str) -> None:
    upgrade(empty_database_url, "0009")
    engine = database_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO timers (id, execute_at, callback_type, callback_config) "
                    "VALUES (gen_random_uuid(), now(), 'http', '{\"url\": \"x\"}')"
                )
            )
        upgrade(empty_database_url)
        with engine.connect() as conn:
            owners = conn.execute(text("SELECT owner FROM timers")).scalars().all()
    finally:
        engine.dispose()
    assert owners == ["default"]
