"""A database as mca-timer (Rocket-Innovation/mca-timer) leaves it, and the stack its users
switch to (`timers api`, the scheduler and a worker as subprocesses).

Written from reading its two sqlx migrations (create the table; move the HTTP-only callback
columns into `callback_type` + `callback_config`), as the state they end in: the columns in the
order they leave them, its checks, indexes, updated_at trigger, and sqlx's `_sqlx_migrations`
with a row per migration. Rows are inserted as its API and scheduler write them: v4 ids, the
tagged callback object as `callback_config`, JSON-null headers and payload where its second
migration wrote them for older rows.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import redis
import requests

from tests.support import processes
from tests.support.receiver import wait_until
from tests.support.services import API_KEY, LOCAL_NETWORKS, Services, execute_autocommit
from timers.embedded import free_port
from timers.store import TimerStore, database_engine

SCHEMA = """
CREATE TABLE timers (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    execute_at TIMESTAMPTZ NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    last_error TEXT,
    executed_at TIMESTAMPTZ,
    metadata JSONB,
    callback_type VARCHAR(10) NOT NULL DEFAULT 'http',
    callback_config JSONB NOT NULL,
    CONSTRAINT valid_status
        CHECK (status IN ('pending', 'executing', 'completed', 'failed', 'canceled')),
    CONSTRAINT future_execute_at CHECK (execute_at > created_at),
    CONSTRAINT valid_callback_type CHECK (callback_type IN ('http', 'nats'))
);
CREATE INDEX idx_timers_execute_at_status ON timers (execute_at, status) WHERE status = 'pending';
CREATE INDEX idx_timers_status ON timers (status);
CREATE INDEX idx_timers_created_at ON timers (created_at DESC);
CREATE INDEX idx_timers_callback_type ON timers (callback_type);
CREATE FUNCTION update_updated_at_column() RETURNS trigger AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER update_timers_updated_at BEFORE UPDATE ON timers
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TABLE _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
);
"""
# sqlx's bookkeeping: version, description (from the file name), a SHA-384 checksum of the file.
MIGRATIONS = (
    (20250101000000, "create timers table"),
    (20250102000000, "add callback types"),
)


@dataclass
class McaTimer:
    """One row as mca-timer writes it."""

    callback: dict[str, Any]
    execute_at: datetime
    status: str = "pending"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(hours=1))
    last_error: str | None = None
    executed_at: datetime | None = None
    metadata: Any = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)


def lay(url: str) -> None:
    """mca-timer's schema, as its migrations leave it, in the empty database at `url`."""
    execute_autocommit(url, SCHEMA)
    rows = ", ".join(
        f"({version}, '{description}', true, "
        f"'\\x{hashlib.sha384(description.encode()).hexdigest()}'::bytea, {1_000_000 + i})"
        for i, (version, description) in enumerate(MIGRATIONS)
    )
    execute_autocommit(
        url,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
        f"VALUES {rows}",
    )


def insert(url: str, timers: list[McaTimer]) -> None:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            for t in timers:
                cur.execute(
                    "INSERT INTO timers (id, created_at, updated_at, execute_at, callback_type, "
                    "callback_config, status, last_error, executed_at, metadata) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        str(t.id),
                        t.created_at,
                        t.executed_at or t.created_at,
                        t.execute_at,
                        t.callback["type"],
                        json.dumps(t.callback),
                        t.status,
                        t.last_error,
                        t.executed_at,
                        None if t.metadata is None else json.dumps(t.metadata),
                    ),
                )
    finally:
        conn.close()


def sqlx_rows(url: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM _sqlx_migrations ORDER BY version")
            return list(cur.fetchall())
    finally:
        conn.close()


# -- the stack a user of mca-timer switches to ------------------------------------------------


@dataclass
class Stack:
    """`timers api`, the scheduler and a worker on one database, as subprocesses."""

    api: str
    store: TimerStore
    task_broker: str

    def call(self, method: str, path: str, key: str = API_KEY, **kwargs: Any) -> Any:
        return requests.request(
            method, f"{self.api}{path}", headers={"X-API-Key": key}, timeout=10, **kwargs
        )

    def status(self, timer_id: str) -> str:
        return str(self.store.get(uuid.UUID(timer_id)).status.value)

    def settled(self, ids: list[str], timeout: float = 30) -> dict[str, str]:
        """Each timer's status once every one is completed or failed."""
        final = ("completed", "failed")
        assert wait_until(lambda: all(self.status(i) in final for i in ids), timeout)
        return {i: self.status(i) for i in ids}


@contextmanager
def running(services: Services, database_url: str) -> Iterator[Stack]:
    """The stack on `database_url`, with `celery` callbacks to `shop.*` tasks on a broker of
    their own. The brokers are test_nats's (modules run one at a time), emptied before and
    after."""
    broker, task_broker = services.redis_database(14), services.redis_database(15)
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": broker,
        "TIMERS_TASK_BROKER_URL": task_broker,
        "TIMERS_CELERY_TASKS": "shop.*",
        "TIMERS_NATS_URL": services.nats_url,
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "TIMERS_CALLBACK_TIMEOUT": "3",
        "TIMERS_LOAD_INTERVAL": "1",
        "TIMERS_EXECUTE_INTERVAL": "0.1",
        "TIMERS_ENQUEUE_TIMEOUT": "2",
        "API_KEY": API_KEY,
        "LOG_LEVEL": "INFO",
    }
    for url in (broker, task_broker):
        redis.Redis.from_url(url).flushdb()
    engine = database_engine(database_url)
    api = [str(processes.BIN / "timers"), "api", "--host", "127.0.0.1", "--port", str(port)]
    started = [
        (processes.worker(env), "ready"),
        (processes.scheduler(env), "scheduler started"),
        (processes.Process("api", api, env), "Uvicorn running"),
    ]
    try:
        for proc, ready in started:
            assert proc.wait_for_output(ready, 60), proc.output()
        yield Stack(f"http://127.0.0.1:{port}", TimerStore(engine), task_broker)
    finally:
        for proc, _ in reversed(started):
            proc.stop()
        engine.dispose()
        for url in (broker, task_broker):
            redis.Redis.from_url(url).flushdb()
