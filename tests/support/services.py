"""Finding PostgreSQL, Redis and NATS for the tests and the benchmark (bench/): the configured ones
(`DATABASE_URL`, `REDIS_URL`, `TIMERS_NATS_URL`), else the local services on their standard ports,
else embedded ones (timers.embedded) started under a scratch directory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import redis
from sqlalchemy.engine import make_url

from timers.embedded import port_is_open, start_nats, start_postgres, start_redis

# The API key every test app and process is given (keys are at least 32 characters).
API_KEY = "test-api-key-0123456789abcdefghijklmnop"
# The receivers of the tests listen on this host.
LOCAL_NETWORKS = "127.0.0.0/8"
# The Redis database the shared `settings` fixture names as the task broker of `celery` callbacks:
# the example shop's (examples/durable_eta/shop.py), never the timers broker.
TASK_BROKER_DATABASE = 6


@dataclass
class Services:
    postgres_url: str  # an admin connection: tests create and drop databases through it
    redis_url: str
    nats_url: str  # a NATS server with JetStream ("": not asked for)
    embedded: list[Any] = field(default_factory=list)

    def database_url(self, name: str) -> str:
        return make_url(self.postgres_url).set(database=name).render_as_string(hide_password=False)

    def redis_database(self, index: int) -> str:
        """The same Redis server, another numbered database (so suites don't share queues)."""
        base = self.redis_url.rsplit("/", 1)[0] if self.redis_url.count("/") > 2 else self.redis_url
        return f"{base}/{index}"

    def admin_execute(self, sql: str) -> None:
        """Run one statement on the admin connection, outside a transaction."""
        execute_autocommit(self.postgres_url, sql)

    def stop(self) -> None:
        for server in self.embedded:
            server.stop()


def execute_autocommit(url: str, sql: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(False)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _postgres_reachable(url: str) -> bool:
    try:
        psycopg2.connect(
            make_url(url).set(drivername="postgresql").render_as_string(False), connect_timeout=2
        ).close()
        return True
    except psycopg2.Error:
        return False


def find_services(scratch: Path, *, nats: bool = True, own_redis: bool = False) -> Services:
    """PostgreSQL and Redis, and NATS unless `nats` is False (the benchmark needs none). With
    `own_redis`, a Redis server of its own (embedded) whatever is configured: test suites pick
    fixed numbered databases, so suites running side by side each need a server."""
    embedded: list[Any] = []
    pg_url = os.environ.get("DATABASE_URL")
    if not pg_url:
        local = "postgresql://postgres@127.0.0.1:5432/postgres"
        if port_is_open("127.0.0.1", 5432) and _postgres_reachable(local):
            pg_url = local
        else:
            pg = start_postgres(scratch / "pg")
            embedded.append(pg)
            pg_url = pg.url
    redis_url = None if own_redis else os.environ.get("REDIS_URL")
    if not redis_url:
        if port_is_open("127.0.0.1", 6379) and not own_redis:
            redis_url = "redis://127.0.0.1:6379/9"  # a database of its own on a shared server
        else:
            rd = start_redis(scratch / "redis")
            embedded.append(rd)
            redis_url = rd.url
    redis.Redis.from_url(redis_url).ping()
    nats_url = os.environ.get("TIMERS_NATS_URL", "") if nats else ""
    if nats and not nats_url:
        if port_is_open("127.0.0.1", 4222):
            nats_url = "nats://127.0.0.1:4222"
        else:
            server = start_nats(scratch / "nats")
            embedded.append(server)
            nats_url = server.url
    return Services(postgres_url=pg_url, redis_url=redis_url, nats_url=nats_url, embedded=embedded)
