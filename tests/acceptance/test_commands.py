"""The real commands, run as a user runs them: exit codes, one-line errors, clean shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import inspect

from tests.support import processes
from tests.support.broker import queued_timer_ids
from tests.support.databases import create_database, drop_database
from tests.support.receiver import wait_until
from tests.support.services import API_KEY, Services
from timers.embedded import free_port
from timers.models import TimerStatus
from timers.storage import TimerFilter
from timers.store import TimerStore, database_engine

UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/timers"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def run(
    argv: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        argv,
        cwd=processes.ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def timers_cli(*args: str) -> list[str]:
    return [str(processes.BIN / "timers"), *args]


def scheduler_cli() -> list[str]:
    return [sys.executable, "-m", "timers.scheduler"]


@pytest.fixture
def empty_database_url(services: Services) -> Iterator[str]:
    name = create_database(services)
    yield services.database_url(name)
    drop_database(services, name)


def test_help_of_each_command() -> None:
    assert "migrate" in run(timers_cli("--help"), {}).stdout
    assert "scheduler" in run(scheduler_cli() + ["--help"], {}).stdout


def test_migrate_creates_the_schema(empty_database_url: str) -> None:
    result = run(timers_cli("migrate"), {"DATABASE_URL": empty_database_url})
    assert result.returncode == 0, result.stderr
    engine = database_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            assert "timers" in inspect(conn).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("argv", "env", "code", "message"),
    [
        (scheduler_cli(), {"DATABASE_URL": UNREACHABLE_DB}, 1, "cannot reach PostgreSQL"),
        (scheduler_cli(), {"DATABASE_URL": "", "REDIS_URL": "x"}, 2, "DATABASE_URL is not set"),
        (timers_cli("migrate"), {"DATABASE_URL": UNREACHABLE_DB}, 1, "cannot migrate"),
        (timers_cli("api"), {"API_KEY": ""}, 2, "API_KEY is not set"),
        (timers_cli("api"), {"API_KEY": "short"}, 2, "API_KEY: a key must be at least 32"),
        (timers_cli("api"), {"API_KEYS": "a" * 32 + ",b"}, 2, "API_KEYS: a key must be at least"),
        (timers_cli("api"), {"TIMERS_LOOKAHEAD": "soon"}, 2, "TIMERS_LOOKAHEAD must be a number"),
        (timers_cli("api"), {"TIMERS_ALLOWED_NETWORKS": "10.0.0.0/33"}, 2, "TIMERS_ALLOWED_NET"),
    ],
    ids=[
        "scheduler-no-db",
        "scheduler-no-url",
        "migrate-no-db",
        "api-no-key",
        "api-short-key",
        "api-short-second-key",
        "bad-setting",
        "bad-network",
    ],
)
def test_commands_fail_fast_with_one_line(
    services: Services, argv: list[str], env: dict[str, str], code: int, message: str
) -> None:
    full = {"REDIS_URL": services.redis_url, "API_KEY": API_KEY, **env}
    result = run(argv, full, timeout=30)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_scheduler_fails_fast_when_the_broker_is_unreachable(database_url: str) -> None:
    result = run(scheduler_cli(), {"DATABASE_URL": database_url, "REDIS_URL": UNREACHABLE_REDIS})
    assert result.returncode == 1
    assert "cannot reach the Celery broker" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_worker_fails_fast_when_the_database_is_unreachable(services: Services) -> None:
    result = run(
        [str(processes.BIN / "celery"), "-A", "timers.celery_app", "worker"],
        {"DATABASE_URL": UNREACHABLE_DB, "REDIS_URL": services.redis_database(11)},
    )
    assert result.returncode != 0
    assert "timers worker: cannot reach PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


def test_api_command_serves_over_http(services: Services, database_url: str) -> None:
    port = free_port()
    api = processes.Process(
        "api",
        timers_cli("api", "--host", "127.0.0.1", "--port", str(port)),
        {"DATABASE_URL": database_url, "API_KEY": API_KEY},
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1) as r:
                    return bool(json.load(r)["data"]["status"] == "up")
            except OSError:
                return False

        assert wait_until(healthy, 30), api.output()
        body = json.dumps(
            {
                "execute_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
                "callback_type": "http",
                "callback_config": {"url": "https://receiver.example/hook"},
            }
        ).encode()
        request = urllib.request.Request(
            f"{base}/timers",
            data=body,
            method="POST",
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
            assert json.load(response)["data"]["status"] == "pending"
        api.signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert api.popen.wait(10) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in api.output()
    finally:
        api.stop()


def test_sigterm_during_a_large_batch_leaves_nothing_claimed_but_unenqueued(
    services: Services, database_url: str
) -> None:
    broker = services.redis_database(12)
    queue = redis.Redis.from_url(broker)
    queue.flushdb()
    engine = database_engine(database_url)
    store = TimerStore(engine)
    due = datetime.now(UTC) + timedelta(seconds=3)
    try:
        with engine.begin() as conn:
            # 3,000 timers all due at the same instant, inserted in one statement.
            from timers.models import uuid7
            from timers.schema import timers

            conn.execute(
                timers.insert(),
                [
                    {
                        "id": uuid7(),
                        "execute_at": due,
                        "callback_type": "http",
                        "callback_config": {"type": "http", "url": "http://127.0.0.1:9/"},
                        "status": "pending",
                    }
                    for _ in range(3000)
                ],
            )
        proc = processes.scheduler(
            {"DATABASE_URL": database_url, "REDIS_URL": broker, "TIMERS_EXECUTE_INTERVAL": "0.05"}
        )
        assert proc.wait_for_output("Executing", 30), proc.output()
        sent = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.popen.wait(10)
        stopped_after = time.monotonic() - sent
        proc.stop()
        assert code == 0, proc.output()
        assert stopped_after < 2.0, f"took {stopped_after:.2f}s to stop"
        executing = store.page(where=TimerFilter(status=TimerStatus.EXECUTING), limit=1).total
        queued = len(queued_timer_ids(broker))
        # Every claimed timer has its message in the broker; nothing is claimed and stranded.
        assert executing == queued
        assert executing > 0
    finally:
        queue.flushdb()
        engine.dispose()
