"""Safe to put in front of other teams, where PostgreSQL itself is the subject: API statements are
cut off by a statement timeout (and answered clearly), the other processes' are not, and the
scheduler never prints the broker's password. The rest is in tests/unit/test_api_security.py."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings
from timers.storage import StoreError
from timers.store import database_engine, database_errors
from timers.testing import InMemoryStore


def test_api_statements_are_cut_off_by_a_statement_timeout_and_answered_clearly(
    database_url: str,
) -> None:
    store = create_app(Settings(database_url=database_url, api_key=API_KEY)).state.store
    engine = store.engine
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "5s"
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        began = time.monotonic()
        with (
            pytest.raises(StoreError, match="statement timeout") as cut_off,
            database_errors(),
            engine.connect() as conn,
        ):
            conn.exec_driver_sql("SELECT pg_sleep(60)")
        assert time.monotonic() - began < 30
        # The same connection goes on serving, from the pool.
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() == backend
        assert engine.pool.checkedout() == 0
    finally:
        engine.dispose()

    class Slow(InMemoryStore):
        def page(self, **_: Any) -> Any:
            raise cut_off.value

    app = create_app(Settings(api_key=API_KEY), store=Slow())
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as c:
        response = c.get("/timers", params={"total": "true"})
    assert response.status_code == 500
    answer = response.json()
    assert answer["code"] == 1 and "took too long" in answer["message"], answer


def test_the_scheduler_and_workers_engines_have_no_statement_timeout(database_url: str) -> None:
    engine = database_engine(database_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
    finally:
        engine.dispose()


def test_the_scheduler_never_prints_the_broker_password(database_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "timers.scheduler"],
        env={"DATABASE_URL": database_url, "REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot reach the Celery broker" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
