"""A database laid as mca-timer's migrations leave it, holding its timers, is adopted by
`timers migrate` (the real command); then the real API (`timers api`), scheduler and worker run on
it, with a real HTTP receiver and a real NATS subscriber: its pending timers are delivered once
each (NATS ones on `topic.key`), its finished ones read back, new timers of every kind work. A
`timers` table that is not mca-timer's is refused, with nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from tests.support import mca_timer, processes
from tests.support.databases import create_database, drop_database
from tests.support.mca_timer import McaTimer, Stack, running
from tests.support.nats import Subscriber
from tests.support.receiver import Receiver
from tests.support.services import Services, execute_autocommit
from timers.schema import metadata
from timers.store import database_engine

TOPIC = f"mca.test.{uuid.uuid4().hex[:10]}"  # every NATS subject of this module is under it


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def its_timers(receiver: Receiver) -> dict[str, McaTimer]:
    """Rows as mca-timer wrote them: pending ones of each kind (one with JSON-null headers and
    payload, as its migration wrote older rows), one it left executing, finished ones."""
    hour_ago = _in(-3600)
    return {
        "http": McaTimer(
            {
                "type": "http",
                "url": receiver.url("/mca/http"),
                "headers": {"X-Test-Header": "http-test", "X-Count": 3},
                "payload": {"event": "http_callback_test"},
            },
            _in(2),
            metadata={"tenant": "acme"},
        ),
        "http-null": McaTimer(
            {"type": "http", "url": receiver.url("/mca/null"), "headers": None, "payload": None},
            _in(2),
        ),
        "nats": McaTimer(
            {
                "type": "nats",
                "topic": TOPIC,
                "key": "order-42",
                "headers": {"X-Tenant": "acme"},
                "payload": {"order": 42},
            },
            _in(2),
        ),
        "nats-null": McaTimer(
            {"type": "nats", "topic": f"{TOPIC}.plain", "headers": None, "payload": None}, _in(2)
        ),
        "executing": McaTimer(
            {"type": "http", "url": receiver.url("/mca/executing")},
            _in(-120),
            status="executing",
        ),
        "completed": McaTimer(
            {"type": "http", "url": "https://example.com/hook", "payload": {"n": 1}},
            hour_ago + timedelta(minutes=5),
            status="completed",
            created_at=hour_ago,
            executed_at=hour_ago + timedelta(minutes=5),
            metadata=["legacy"],
        ),
        "failed": McaTimer(
            {"type": "http", "url": "https://example.com/down"},
            hour_ago + timedelta(minutes=5),
            status="failed",
            created_at=hour_ago,
            executed_at=hour_ago + timedelta(minutes=5),
            last_error="HTTP 500 Internal Server Error from https://example.com/down",
        ),
        "canceled": McaTimer(
            {"type": "nats", "topic": TOPIC, "key": "gone"},
            hour_ago + timedelta(days=1),
            status="canceled",
            created_at=hour_ago,
        ),
    }


@dataclass
class Adopted:
    url: str
    rows: dict[str, McaTimer]
    migrate: subprocess.CompletedProcess[str]
    sqlx_before: list[tuple[Any, ...]]


def migrate(url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [str(processes.BIN / "timers"), "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def subscriber(services: Services) -> Iterator[Subscriber]:
    with Subscriber(services.nats_url, f"{TOPIC}.>") as s:
        yield s


@pytest.fixture(scope="module")
def adopted(services: Services, receiver: Receiver) -> Iterator[Adopted]:
    name = create_database(services)
    url = services.database_url(name)
    mca_timer.lay(url)
    rows = its_timers(receiver)
    mca_timer.insert(url, list(rows.values()))
    before = mca_timer.sqlx_rows(url)
    yield Adopted(url, rows, migrate(url), before)
    drop_database(services, name)


@pytest.fixture(scope="module")
def stack(services: Services, adopted: Adopted, subscriber: Subscriber) -> Iterator[Stack]:
    assert adopted.migrate.returncode == 0, adopted.migrate.stderr
    with running(services, adopted.url) as started:
        yield started


# -- adoption -------------------------------------------------------------------------------------


def test_migrate_says_what_it_found_and_did_and_leaves_exactly_our_schema(
    adopted: Adopted,
) -> None:
    assert adopted.migrate.returncode == 0, adopted.migrate.stderr
    said = [line for line in adopted.migrate.stdout.splitlines() if line]
    assert said[0].startswith("timers migrate: found mca-timer's timers table"), said
    assert "20250101000000, 20250102000000" in said[0] and "8 timers" in said[0], said
    assert said[1].startswith("timers migrate: adopted it as revision 0001"), said
    assert said[-1] == "timers migrate: database is at head"
    engine = database_engine(adopted.url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            rows = conn.execute(text("SELECT id, status FROM timers")).all()
            checks = (
                conn.execute(
                    text("SELECT conname FROM pg_constraint WHERE conrelid = 'timers'::regclass")
                )
                .scalars()
                .all()
            )
            leftovers = conn.execute(
                text("SELECT count(*) FROM pg_proc WHERE proname = 'update_updated_at_column'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert [d[1].name for d in diff] == ["_sqlx_migrations"]  # sqlx's, not ours: left alone
    assert all(d[0] == "remove_table" for d in diff)
    assert {(str(i), s) for i, s in rows} == {(str(t.id), t.status) for t in adopted.rows.values()}
    assert sorted(checks) == ["ck_timers_status", "timers_pkey"]
    assert leftovers == 0
    assert mca_timer.sqlx_rows(adopted.url) == adopted.sqlx_before
    again = migrate(adopted.url)  # nothing left to adopt
    assert again.returncode == 0 and again.stdout == "timers migrate: database is at head\n"


def test_its_pending_timers_are_delivered_once_each(
    adopted: Adopted, stack: Stack, receiver: Receiver, subscriber: Subscriber
) -> None:
    rows = adopted.rows
    due = ["http", "http-null", "nats", "nats-null", "executing"]
    statuses = stack.settled([str(rows[name].id) for name in due])
    assert set(statuses.values()) == {"completed"}, [
        stack.store.get(uuid.UUID(i)).last_error for i in statuses
    ]
    time.sleep(0.5)  # room for a duplicate to show up
    counts = receiver.count_by_timer()
    assert {name: counts.get(str(rows[name].id)) for name in due[:2] + due[-1:]} == {
        "http": 1,
        "http-null": 1,
        "executing": 1,
    }
    [http] = receiver.for_timer(rows["http"].id)
    assert http.body == {"event": "http_callback_test"}
    assert http.headers["X-Test-Header"] == "http-test" and "X-Count" not in http.headers
    assert receiver.for_timer(rows["http-null"].id)[0].body is None
    messages = {m.headers["Nats-Msg-Id"]: m for m in subscriber.received()}
    assert (
        Counter(m.headers["Nats-Msg-Id"] for m in subscriber.received()).most_common(1)[0][1] == 1
    )
    keyed, plain = messages[str(rows["nats"].id)], messages[str(rows["nats-null"].id)]
    assert keyed.subject == f"{TOPIC}.order-42" and json.loads(keyed.data) == {"order": 42}
    assert keyed.headers["X-Tenant"] == "acme"
    assert plain.subject == f"{TOPIC}.plain" and plain.data == b""  # as mca-timer sent it


def test_its_finished_timers_read_back(adopted: Adopted, stack: Stack) -> None:
    rows = adopted.rows
    completed = stack.call("GET", f"/timers/{rows['completed'].id}").json()["data"]
    assert completed["status"] == "completed" and completed["executed_at"] is not None
    assert completed["callback"] == {**rows["completed"].callback, "type": "http"}
    assert completed["metadata"] == {"value": ["legacy"]}  # not an object: kept under "value"
    failed = stack.call("GET", f"/timers/{rows['failed'].id}").json()["data"]
    assert failed["status"] == "failed" and failed["last_error"] == rows["failed"].last_error
    canceled = stack.call("GET", f"/timers/{rows['canceled'].id}").json()["data"]
    assert canceled["status"] == "canceled"
    assert canceled["callback"] == {"type": "nats", "topic": TOPIC, "key": "gone"}
    assert stack.call("DELETE", f"/timers/{rows['failed'].id}").status_code == 400


def test_new_timers_of_every_kind_work_after_adoption(
    stack: Stack, receiver: Receiver, subscriber: Subscriber
) -> None:
    at = _in(1).isoformat()
    bodies: list[dict[str, Any]] = [
        {"callback_config": {"type": "http", "url": receiver.url("/ours")}},
        {"callback": {"type": "http", "url": receiver.url("/theirs"), "headers": None}},
        {"callback_config": {"type": "nats", "subject": f"{TOPIC}.ours", "payload": [1]}},
        {"callback": {"type": "nats", "topic": TOPIC, "key": "theirs", "payload": None}},
        {"callback_config": {"type": "celery", "task": "shop.tasks.expire", "args": [1]}},
        {"callback": {"type": "celery", "task": "shop.tasks.expire", "kwargs": {"n": 2}}},
    ]
    ids = []
    for body in bodies:
        created = stack.call("POST", "/timers", json={"execute_at": at, **dict(body)})
        assert created.status_code == 201, created.text
        ids.append(created.json()["data"]["id"])
    assert set(stack.settled(ids).values()) == {"completed"}
    assert redis.Redis.from_url(stack.task_broker).llen("celery") == 2
    subjects = {m.subject for m in subscriber.received() if m.headers["Nats-Msg-Id"] in ids}
    assert subjects == {f"{TOPIC}.ours", f"{TOPIC}.theirs"}
    assert {a.path for a in receiver.arrivals if a.timer_id in ids} == {"/ours", "/theirs"}


def test_a_timers_table_that_is_not_mca_timers_is_refused_with_nothing_changed(
    services: Services,
) -> None:
    name = create_database(services)
    url = services.database_url(name)
    try:
        execute_autocommit(url, "CREATE TABLE timers (id uuid PRIMARY KEY, due timestamptz)")
        refused = migrate(url)
        assert refused.returncode == 1
        assert "neither ours (no alembic_version) nor mca-timer's" in refused.stderr
        assert "missing: callback_config" in refused.stderr and "unexpected: due" in refused.stderr
        engine = database_engine(url)
        try:
            with engine.connect() as conn:
                tables = conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                ).scalars()
                assert list(tables) == ["timers"]
        finally:
            engine.dispose()
    finally:
        drop_database(services, name)
