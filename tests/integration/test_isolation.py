"""Receivers we don't control: hanging, slow, trickling, huge or poisonous ones cost only their own
timers. The worker is `celery -A timers.celery_app worker` exactly as shipped (its default pool and
concurrency), with the real scheduler, PostgreSQL, Redis and receivers on 127.0.0.1."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import text

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.receiver import Receiver, wait_until
from tests.support.services import LOCAL_NETWORKS, Services
from timers.models import TimerStatus, uuid7
from timers.store import TimerStore, database_engine

CALLBACK_TIMEOUT = 5
LEASE = 2  # short, so that a slow delivery outlives several leases in a few seconds
FINAL = {TimerStatus.COMPLETED, TimerStatus.FAILED}


@pytest.fixture(scope="module")
def env(services: Services, template_database: str) -> Iterator[dict[str, str]]:
    name = create_database(services, template_database)
    broker = services.redis_database(8)
    redis.Redis.from_url(broker).flushdb()
    yield {
        "DATABASE_URL": services.database_url(name),
        "REDIS_URL": broker,
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "TIMERS_CALLBACK_TIMEOUT": str(CALLBACK_TIMEOUT),
        "TIMERS_DELIVERY_LEASE": str(LEASE),
        "TIMERS_LOAD_INTERVAL": "1",
        "LOG_LEVEL": "INFO",
    }
    redis.Redis.from_url(broker).flushdb()
    drop_database(services, name)


@pytest.fixture(scope="module")
def store(env: dict[str, str]) -> Iterator[TimerStore]:
    engine = database_engine(env["DATABASE_URL"])
    yield TimerStore(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def stack(env: dict[str, str]) -> Iterator[processes.Process]:
    worker = processes.worker(env)
    assert worker.wait_for_output("ready", 60), worker.output()
    scheduler = processes.scheduler(env)
    assert scheduler.wait_for_output("scheduler started", 30), scheduler.output()
    yield worker
    scheduler.stop()
    worker.stop()


@pytest.fixture
def receiver(store: TimerStore, stack: processes.Process) -> Iterator[Receiver]:
    with store.engine.begin() as conn:
        conn.execute(text("TRUNCATE timers"))
    r = Receiver().start()
    yield r
    r.stop()


def insert(store: TimerStore, at: datetime, configs: list[dict[str, Any]]) -> list[uuid.UUID]:
    """Timers written straight into the table (no API validation on the way)."""
    rows = [
        {
            "id": uuid7(),
            "at": at,
            # Written as JSON text by hand: a direct writer can store what Python can't encode.
            "config": encode({"type": "http", **config}),
        }
        for config in configs
    ]
    statement = text(
        "INSERT INTO timers (id, execute_at, callback_type, callback_config, status) "
        "VALUES (:id, :at, 'http', CAST(:config AS jsonb), 'pending')"
    )
    with store.engine.begin() as conn:
        conn.execute(statement, rows)
    return [uuid.UUID(str(row["id"])) for row in rows]


def encode(value: Any) -> str:
    if isinstance(value, LongInteger):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {encode(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


class LongInteger(str):
    """A JSON integer literal longer than Python converts (written into the row as it is)."""


def statuses(store: TimerStore, ids: list[uuid.UUID]) -> list[TimerStatus]:
    return [store.get(i).status for i in ids]


def test_hanging_receivers_delay_no_other_timer(store: TimerStore, receiver: Receiver) -> None:
    hanging = [Receiver().start() for _ in range(12)]
    try:
        now = datetime.now(UTC)
        # Due 50 ms apart: each is claimed on its own and travels in a message of its own.
        stuck = [
            insert(store, now + timedelta(seconds=1 + i * 0.05), [{"url": r.url("/hang")}])[0]
            for i, r in enumerate(hanging)
        ]
        healthy = insert(
            store,
            now + timedelta(seconds=2),
            [{"url": receiver.url("/ok"), "payload": {"i": i}} for i in range(300)],
        )
        assert wait_until(lambda: all(s in FINAL for s in statuses(store, healthy)), 30)
        # Every healthy timer was delivered (once) while the hanging ones were still waiting
        # for their receivers: none of them had timed out yet.
        assert statuses(store, stuck) == [TimerStatus.EXECUTING] * len(stuck)
        assert set(statuses(store, healthy)) == {TimerStatus.COMPLETED}
        counts = receiver.count_by_timer()
        assert all(counts.get(str(i)) == 1 for i in healthy)
        assert wait_until(lambda: all(s in FINAL for s in statuses(store, stuck)), 30)
        for timer_id in stuck:
            assert store.get(timer_id).last_error == f"timeout after {CALLBACK_TIMEOUT}s"
    finally:
        for r in hanging:
            r.stop()


def test_a_delivery_that_raises_fails_that_timer_alone(
    store: TimerStore, receiver: Receiver
) -> None:
    at = datetime.now(UTC) + timedelta(seconds=1)
    healthy = [{"url": receiver.url("/ok"), "payload": {"i": i}} for i in range(27)]
    poison = [
        # An integer too long for Python to convert (only a direct write can store one): its
        # row must stay readable, and only its own delivery may fail.
        {"url": receiver.url("/ok"), "payload": {"n": LongInteger("9" * 5000)}},
        # A header value that can't go on the wire as it is (stored before validation existed).
        {"url": receiver.url("/ok"), "headers": {"X-Note": "café €"}},
    ]
    ids = insert(store, at, healthy[:13] + poison + healthy[13:])
    bad = ids[13:15]
    good = ids[:13] + ids[15:]
    assert wait_until(lambda: all(s in FINAL for s in statuses(store, ids)), 20)
    assert set(statuses(store, good)) == {TimerStatus.COMPLETED}
    assert statuses(store, bad) == [TimerStatus.FAILED, TimerStatus.FAILED]
    raised, header = (store.get(i).last_error or "" for i in bad)
    assert raised.startswith("invalid callback_config: callback_config.payload.n"), raised
    assert header.startswith("invalid callback_config: callback_config.headers.X-Note"), header
    counts = receiver.count_by_timer()
    assert all(counts.get(str(i)) == 1 for i in good)
    assert str(bad[0]) not in counts and str(bad[1]) not in counts


def test_a_receiver_trickling_bytes_is_cut_off_at_the_deadline(
    store: TimerStore, receiver: Receiver
) -> None:
    [timer_id] = insert(store, datetime.now(UTC), [{"url": receiver.url("/trickle")}])
    assert wait_until(lambda: store.get(timer_id).status in FINAL, 3 * CALLBACK_TIMEOUT)
    timer = store.get(timer_id)
    assert timer.last_error == f"timeout after {CALLBACK_TIMEOUT}s"
    assert len(receiver.for_timer(timer_id)) == 1


def test_a_10_mb_answer_is_not_read(store: TimerStore, receiver: Receiver) -> None:
    size = 10 * 1024 * 1024
    [timer_id] = insert(store, datetime.now(UTC), [{"url": receiver.url(f"/big/{size}")}])
    assert wait_until(lambda: str(timer_id) in receiver.body_bytes_sent, 3 * CALLBACK_TIMEOUT)
    assert store.get(timer_id).status is TimerStatus.COMPLETED
    # The worker read the first 64 KiB and hung up; the receiver could not send the rest.
    assert receiver.body_bytes_sent[str(timer_id)] < size


def test_a_slow_delivery_outliving_several_leases_is_sent_once(
    store: TimerStore, receiver: Receiver
) -> None:
    # 4 s of a 5 s timeout, with a 2 s lease and a load (with recovery) every second.
    [timer_id] = insert(store, datetime.now(UTC), [{"url": receiver.url("/slow/4")}])
    assert wait_until(lambda: store.get(timer_id).status in FINAL, 3 * CALLBACK_TIMEOUT)
    assert store.get(timer_id).status is TimerStatus.COMPLETED
    assert store.get(timer_id).claims == 1
    assert len(receiver.for_timer(timer_id)) == 1
