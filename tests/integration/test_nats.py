"""The `nats` callback kind against a real NATS server with JetStream: timers created through the
API, fired by the real scheduler and delivered by `celery -A timers.celery_app worker` as shipped,
received by a plain subscriber and by a JetStream consumer; a worker whose NATS server is down;
and the configs the API refuses."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.nats import Subscriber, consume, stream
from tests.support.receiver import wait_until
from tests.support.services import API_KEY, Services
from tests.support.timers import write_directly
from timers import callbacks
from timers.api import create_app
from timers.callbacks import CallbackRules, DeliveryContext
from timers.config import Settings, settings_from_env
from timers.embedded import start_nats
from timers.models import TimerStatus
from timers.outbound import OutboundPolicy
from timers.store import TimerStore, database_engine

CALLBACK_TIMEOUT = 3
# The subjects the stacks' API and workers let `nats` callbacks publish to.
SUBJECTS = "timers.test."
RULES = CallbackRules(nats_subjects=(SUBJECTS,))
FINAL = {TimerStatus.COMPLETED, TimerStatus.FAILED}


# -- a stack (worker + scheduler) per NATS server: the real one, and one that is down ----------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


class Stack:
    def __init__(self, services: Services, template: str, broker_db: int, nats_url: str) -> None:
        self.services = services
        self.name = create_database(services, template)
        self.broker = services.redis_database(broker_db)
        redis.Redis.from_url(self.broker).flushdb()
        self.env = {
            "DATABASE_URL": services.database_url(self.name),
            "REDIS_URL": self.broker,
            "TIMERS_NATS_URL": nats_url,
            "TIMERS_NATS_SUBJECTS": SUBJECTS,
            "TIMERS_CALLBACK_TIMEOUT": str(CALLBACK_TIMEOUT),
            "TIMERS_LOAD_INTERVAL": "1",
            "TIMERS_EXECUTE_INTERVAL": "0.1",
            "LOG_LEVEL": "INFO",
        }
        self.engine = database_engine(self.env["DATABASE_URL"])
        self.store = TimerStore(self.engine)
        self.settings = settings_from_env({**self.env, "API_KEY": API_KEY})
        self.worker = processes.worker(self.env)
        assert self.worker.wait_for_output("ready", 60), self.worker.output()
        self.scheduler = processes.scheduler(self.env)
        assert self.scheduler.wait_for_output("scheduler started", 30), self.scheduler.output()

    def client(self) -> TestClient:
        app = create_app(self.settings, store=self.store)
        return TestClient(app, headers={"X-API-Key": API_KEY})

    def clear(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("TRUNCATE timers"))

    def stop(self) -> None:
        self.scheduler.stop()
        self.worker.stop()
        self.engine.dispose()
        redis.Redis.from_url(self.broker).flushdb()
        drop_database(self.services, self.name)


@pytest.fixture(scope="module")
def up(services: Services, template_database: str) -> Iterator[Stack]:
    stack = Stack(services, template_database, 14, services.nats_url)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def down(services: Services, template_database: str) -> Iterator[Stack]:
    stack = Stack(services, template_database, 15, f"nats://127.0.0.1:{closed_port()}")
    yield stack
    stack.stop()


def schedule(
    client: TestClient, configs: list[dict[str, Any]], in_seconds: float = 1.0
) -> list[uuid.UUID]:
    at = (datetime.now(UTC) + timedelta(seconds=in_seconds)).isoformat()
    response = client.post(
        "/timers/batch",
        json={
            "timers": [
                {"execute_at": at, "callback_type": "nats", "callback_config": config}
                for config in configs
            ]
        },
    )
    assert response.status_code == 201, response.text
    return [uuid.UUID(t["id"]) for t in response.json()["data"]["timers"]]


def settle(store: TimerStore, ids: list[uuid.UUID], timeout: float) -> list[TimerStatus]:
    assert wait_until(lambda: all(store.get(i).status in FINAL for i in ids), timeout)
    return [store.get(i).status for i in ids]


# -- delivery -----------------------------------------------------------------------------------


def test_a_subscriber_gets_each_timer_once_with_its_payload_and_headers(up: Stack) -> None:
    up.clear()
    subject = f"timers.test.{uuid.uuid4().hex}.expired"
    configs = [
        {
            "type": "nats",
            "subject": subject,
            "payload": {"order": i, "note": "ünïcode"},
            "headers": {"Tenant": "acme", "X-Timer-Id": "not-mine"},
        }
        for i in range(40)
    ]
    with Subscriber(up.services.nats_url, subject) as subscriber, up.client() as client:
        ids = schedule(client, configs)
        assert set(settle(up.store, ids, 30)) == {TimerStatus.COMPLETED}, [
            up.store.get(i).last_error for i in ids
        ]
        # A plain publish is flushed before the timer is completed: every message is here.
        assert wait_until(lambda: len(subscriber.received()) >= len(ids), 5)
        time.sleep(0.5)  # room for a duplicate to show up
        received = subscriber.received()
    counts = Counter(m.headers.get("Nats-Msg-Id") for m in received)
    assert counts == {str(i): 1 for i in ids}
    for message in received:
        timer_id = message.headers["Nats-Msg-Id"]
        order = ids.index(uuid.UUID(timer_id))
        assert message.subject == subject
        assert json.loads(message.data) == {"order": order, "note": "ünïcode"}
        assert message.headers["X-Timer-Id"] == timer_id
        assert message.headers["Tenant"] == "acme"
    for made in ids:
        timer = up.store.get(made)
        assert timer.last_error is None and timer.executed_at is not None


def test_a_jetstream_consumer_gets_each_timer_once(up: Stack) -> None:
    up.clear()
    name = f"TIMERS_TEST_{uuid.uuid4().hex[:12].upper()}"
    subject = f"timers.test.{name.lower()}"
    configs = [
        {"type": "nats", "subject": subject, "payload": [i], "jetstream": True} for i in range(30)
    ]
    with stream(up.services.nats_url, name, [subject]), up.client() as client:
        ids = schedule(client, configs)
        assert set(settle(up.store, ids, 30)) == {TimerStatus.COMPLETED}, [
            up.store.get(i).last_error for i in ids
        ]
        received = consume(up.services.nats_url, name, subject)
    assert Counter(m.headers.get("Nats-Msg-Id") for m in received) == {str(i): 1 for i in ids}
    assert sorted(json.loads(m.data)[0] for m in received) == list(range(30))


def test_a_redelivered_jetstream_timer_is_stored_once(services: Services) -> None:
    # What a timer fired again after its worker died does: the same message, the same id.
    name = f"TIMERS_TEST_{uuid.uuid4().hex[:12].upper()}"
    subject = f"timers.test.{name.lower()}"
    callback = callbacks.parse(
        "nats", {"type": "nats", "subject": subject, "jetstream": True}, rules=RULES
    )
    timer_id = uuid.uuid4()

    async def deliver_twice() -> list[Any]:
        context = DeliveryContext(
            timeout=CALLBACK_TIMEOUT, policy=OutboundPolicy(), nats_url=services.nats_url
        )
        try:
            return [await callback.deliver(timer_id, context) for _ in range(2)]
        finally:
            await context.close()

    with stream(services.nats_url, name, [subject]):
        assert asyncio.run(deliver_twice()) == [None, None]
        received = consume(services.nats_url, name, subject)
    assert [m.headers["Nats-Msg-Id"] for m in received] == [str(timer_id)]


def test_jetstream_without_a_stream_on_the_subject_fails_the_timer(up: Stack) -> None:
    up.clear()
    subject = f"timers.test.{uuid.uuid4().hex}.nostream"
    with up.client() as client:
        [timer_id] = schedule(client, [{"type": "nats", "subject": subject, "jetstream": True}])
    assert settle(up.store, [timer_id], 30) == [TimerStatus.FAILED]
    assert up.store.get(timer_id).last_error == f"JetStream: no stream takes subject {subject}"


def test_a_nats_server_that_is_down_fails_the_timer_within_the_timeout(down: Stack) -> None:
    down.clear()
    subject = f"timers.test.{uuid.uuid4().hex}"
    with down.client() as client:
        ids = schedule(client, [{"type": "nats", "subject": subject}] * 3)
    assert settle(down.store, ids, 30) == [TimerStatus.FAILED] * 3
    for timer_id in ids:
        timer = down.store.get(timer_id)
        error = timer.last_error or ""
        assert error.startswith("NATS unavailable: 127.0.0.1:"), error
        assert "connection refused" in error and f"(waited {CALLBACK_TIMEOUT}s)" in error
        assert timer.executed_at is not None and timer.started_at is not None
        # One deadline for connecting and publishing: failed when it ran out, not later.
        assert (timer.executed_at - timer.started_at).total_seconds() < CALLBACK_TIMEOUT + 2
    assert down.worker.popen.poll() is None, down.worker.output()


def test_a_worker_reconnects_when_its_nats_server_comes_back(tmp_path: Path) -> None:
    # A server of this test's own, stopped and started again on the same port.
    server = start_nats(tmp_path / "nats")
    port = int(server.url.rsplit(":", 1)[1])
    callback = callbacks.parse(
        "nats", {"type": "nats", "subject": "timers.test.reconnect"}, rules=RULES
    )

    async def scenario() -> list[Any]:
        nonlocal server
        context = DeliveryContext(timeout=2, policy=OutboundPolicy(), nats_url=server.url)
        try:
            outcomes = [await callback.deliver(uuid.uuid4(), context)]
            server.stop()
            await asyncio.sleep(0.5)
            outcomes.append(await callback.deliver(uuid.uuid4(), context))
            server = start_nats(tmp_path / "nats", port=port)
            outcomes.append(await callback.deliver(uuid.uuid4(), context))
            return outcomes
        finally:
            await context.close()

    try:
        first, while_down, after = asyncio.run(scenario())
    finally:
        server.stop()
    assert first is None
    assert (while_down or "").startswith(f"NATS unavailable: 127.0.0.1:{port}: "), while_down
    assert after is None


def test_a_config_written_outside_the_rules_fails_in_the_worker_and_is_never_published(
    up: Stack,
) -> None:
    # Straight into the table, as a direct writer (or an older version) could: the worker checks
    # the stored config against the same rules before it publishes anything.
    up.clear()
    tag = uuid.uuid4().hex
    refused = {
        f"$KV.TIMERS_TEST_{tag}.key": {},  # a key-value bucket's own subject
        f"$O.TIMERS_TEST_{tag}.C.chunk": {},  # an object store's
        f"_INBOX.{tag}": {},  # somebody's replies
        f"_R_.{tag}.x": {},
        f"elsewhere.{tag}": {},  # not under TIMERS_NATS_SUBJECTS
        f"timers.test.{tag}.stream": {"Nats-Expected-Stream": "ORDERS"},
        f"timers.test.{tag}.kv": {"KV-Operation": "PURGE"},
    }
    configs = [
        {"type": "nats", "subject": subject, "headers": headers, "payload": 1, "jetstream": False}
        for subject, headers in refused.items()
    ]
    with ExitStack() as listening:
        subscribers = [
            listening.enter_context(Subscriber(up.services.nats_url, subject))
            for subject in refused
        ]
        ids = write_directly(up.engine, "nats", configs)
        assert settle(up.store, ids, 30) == [TimerStatus.FAILED] * len(ids)
        time.sleep(0.5)  # a message published late would be here by now
        assert [s.subject for s in subscribers if s.received()] == []
    for timer_id in ids:
        error = up.store.get(timer_id).last_error or ""
        assert error.startswith("invalid callback_config: callback_config."), error
    assert "reserved" in (up.store.get(ids[0]).last_error or "")  # whatever the prefixes say


# -- what the API refuses -------------------------------------------------------------------------


@pytest.fixture
def client(store: TimerStore, database_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, api_key=API_KEY)
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as c:
        yield c


def nats_body(**config: Any) -> dict[str, Any]:
    return {
        "execute_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "callback_type": "nats",
        "callback_config": {"type": "nats", "subject": "orders.expired", **config},
    }


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"subject": "orders.*"}, "callback_config.subject"),
        ({"subject": "orders.>"}, "callback_config.subject"),
        ({"subject": "orders..expired"}, "callback_config.subject"),
        ({"subject": "orders expired"}, "callback_config.subject"),
        ({"subject": "$JS.API.STREAM.DELETE.ORDERS"}, "callback_config.subject"),
        ({"subject": "$KV.bucket.key"}, "callback_config.subject"),
        ({"subject": "$O.bucket.C.chunk"}, "callback_config.subject"),
        ({"subject": "_INBOX.abc"}, "callback_config.subject"),
        ({"subject": "_R_.abc.def"}, "callback_config.subject"),
        ({"headers": {"Nats-Msg-Id": "x"}}, "callback_config.headers.Nats-Msg-Id"),
        ({"headers": {"nats-expected-stream": "x"}}, "callback_config.headers"),
        ({"headers": {"KV-Operation": "PURGE"}}, "callback_config.headers"),
        ({"headers": {"Bad Name": "x"}}, "callback_config.headers"),
        ({"headers": {"X-Note": "line\r\nbreak"}}, "callback_config.headers"),
        ({"headers": {"X-Note": "café"}}, "callback_config.headers"),
        ({"headers": {"X-Note": 1}}, "callback_config.headers"),
        ({"stream": "ORDERS"}, "callback_config.stream"),
        ({"url": "https://receiver.example/hook"}, "callback_config.url"),
        ({"jetstream": "yes"}, "callback_config.jetstream"),
    ],
)
def test_bad_nats_configs_are_refused_and_nothing_is_stored(
    client: TestClient, store: TimerStore, config: dict[str, Any], field: str
) -> None:
    response = client.post("/timers", json=nats_body(**config))
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == 2
    assert answer["message"].startswith(field), answer["message"]
    assert "pattern" not in answer["message"], answer["message"]  # said in words, not a regex
    assert store.page().total == 0


def test_a_nats_timer_is_stored_with_its_config_and_shown_without_header_values(
    client: TestClient, store: TimerStore
) -> None:
    response = client.post(
        "/timers", json=nats_body(payload={"order": 42}, headers={"Authorization": "s3cr3t"})
    )
    assert response.status_code == 201, response.text
    timer_id = response.json()["data"]["id"]
    stored = store.get(uuid.UUID(timer_id))
    assert stored.callback_type == "nats"
    assert stored.callback_config == {
        "type": "nats",
        "subject": "orders.expired",
        "headers": {"Authorization": "s3cr3t"},
        "payload": {"order": 42},
        "jetstream": False,
    }
    shown = client.get(f"/timers/{timer_id}")
    assert "s3cr3t" not in shown.text
    assert shown.json()["data"]["callback_config"]["headers"] == {"Authorization": "***"}


def test_with_subject_prefixes_the_api_refuses_other_subjects(
    store: TimerStore, database_url: str
) -> None:
    settings = Settings(database_url=database_url, api_key=API_KEY, nats_subjects=("orders.",))
    app = create_app(settings, store=store)
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        taken = client.post("/timers", json=nats_body(subject="orders.eu.expired"))
        assert taken.status_code == 201, taken.text
        response = client.post("/timers", json=nats_body(subject="billing.due"))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 2
    assert response.json()["message"].startswith("callback_config.subject"), response.text
    assert store.page().total == 1
