"""Signed callbacks end to end: the real scheduler and `celery -A timers.celery_app worker`
commands, PostgreSQL, Redis and a receiver on 127.0.0.1. The receiver checks the signatures with
the `standardwebhooks` library (what a user's receiver would run), against the raw bytes it got."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from sqlalchemy import text
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.receiver import Receiver, wait_until
from tests.support.services import LOCAL_NETWORKS, Services
from timers.models import TimerStatus
from timers.receiver import Arrival
from timers.store import NewTimer, TimerStore, database_engine

OLD_SECRET = "whsec_" + base64.b64encode(b"an old secret, 32 bytes long...!").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"the new secret, 32 bytes long..!").decode()
SHOP_SECRET = "whsec_" + base64.b64encode(b"the shop's own secret, 32 bytes.").decode()
SIGNATURE_HEADERS = {"webhook-id", "webhook-timestamp", "webhook-signature"}
SECRETS = {
    "signed": f"{OLD_SECRET},{NEW_SECRET}",
    "unsigned": "",
    # The principal `shop` has a key of its own; every other principal signs with the plain one.
    "per-principal": f"{OLD_SECRET}, shop:{SHOP_SECRET}",
}


@pytest.fixture(scope="module", params=list(SECRETS))
def stack(
    request: pytest.FixtureRequest, services: Services, template_database: str
) -> Iterator[tuple[str, TimerStore]]:
    """A worker and a scheduler, with two signing secrets, none, or one plain and one of a
    principal's own."""
    name = create_database(services, template_database)
    broker = services.redis_database(15)
    redis.Redis.from_url(broker).flushdb()
    env = {
        "DATABASE_URL": services.database_url(name),
        "REDIS_URL": broker,
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "TIMERS_CALLBACK_TIMEOUT": "5",
        "TIMERS_LOAD_INTERVAL": "1",
        "TIMERS_SIGNING_SECRETS": SECRETS[request.param],
        "LOG_LEVEL": "INFO",
    }
    engine = database_engine(env["DATABASE_URL"])
    worker = processes.worker(env)
    scheduler = None
    try:
        assert worker.wait_for_output("ready", 60), worker.output()
        scheduler = processes.scheduler(env)
        assert scheduler.wait_for_output("scheduler started", 30), scheduler.output()
        yield request.param, TimerStore(engine)
    finally:
        if scheduler is not None:
            scheduler.stop()
        worker.stop()
        engine.dispose()
        redis.Redis.from_url(broker).flushdb()
        drop_database(services, name)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def fire(
    store: TimerStore, receiver: Receiver, owner: str = "default", **config: Any
) -> tuple[uuid.UUID, Arrival]:
    """A timer due now, and its one arrival at the receiver."""
    config = {"type": "http", "url": receiver.url("/hook"), **config}
    timer = store.create(NewTimer(datetime.now(UTC), "http", config, owner=owner))
    assert wait_until(lambda: receiver.for_timer(timer.id), 20), "the callback never arrived"
    assert wait_until(lambda: store.get(timer.id).status is TimerStatus.COMPLETED, 10)
    [arrival] = receiver.for_timer(timer.id)
    return timer.id, arrival


def test_signed_callbacks_verify_with_each_current_secret(
    stack: tuple[str, TimerStore], receiver: Receiver
) -> None:
    mode, store = stack
    if mode != "signed":
        pytest.skip("needs signing secrets")
    payload = {"order": 42, "note": "crème brûlée €", "items": [1, 2.5, None, {"deep": True}]}
    timer_id, arrival = fire(store, receiver, payload=payload)
    headers = {name.lower(): value for name, value in arrival.headers.items()}
    assert headers["webhook-id"] == str(timer_id) == headers["x-timer-id"]
    sent_at = int(headers["webhook-timestamp"])
    assert abs(sent_at - arrival.at.timestamp()) <= 2  # the moment of sending
    assert len(headers["webhook-signature"].split(" ")) == 2  # one per secret
    # Each secret alone verifies the bytes that arrived (what a receiver mid-rotation holds).
    for secret in (OLD_SECRET, NEW_SECRET):
        assert Webhook(secret).verify(arrival.raw, arrival.headers) == payload
    other = "whsec_" + base64.b64encode(b"nobody's secret, 32 bytes long..").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(arrival.raw, arrival.headers)


def test_a_stored_timers_own_signature_headers_are_dropped(
    stack: tuple[str, TimerStore], receiver: Receiver
) -> None:
    mode, store = stack
    # The API refuses them; a row written directly (or before they were reserved) still fires.
    forged = {"webhook-id": "forged", "Webhook-Signature": "v1,Zm9yZ2Vk", "X-Mine": "kept"}
    timer_id, arrival = fire(store, receiver, headers=forged, payload={"n": 1})
    headers = {name.lower(): value for name, value in arrival.headers.items()}
    assert headers["x-mine"] == "kept"
    assert "forged" not in headers.values() and "v1,Zm9yZ2Vk" not in headers.values()
    if mode != "unsigned":
        assert headers["webhook-id"] == str(timer_id)
        last = NEW_SECRET if mode == "signed" else OLD_SECRET
        assert Webhook(last).verify(arrival.raw, arrival.headers) == {"n": 1}
    else:
        assert not SIGNATURE_HEADERS & set(headers)


def test_without_secrets_no_signature_headers_are_sent(
    stack: tuple[str, TimerStore], receiver: Receiver
) -> None:
    mode, store = stack
    if mode != "unsigned":
        pytest.skip("needs no signing secrets")
    timer_id, arrival = fire(store, receiver, payload={"n": 2})
    headers = {name.lower() for name in arrival.headers}
    assert not SIGNATURE_HEADERS & headers
    assert arrival.headers["X-Timer-Id"] == str(timer_id) and arrival.body == {"n": 2}


def test_each_principals_callbacks_verify_under_its_own_secret_only(
    stack: tuple[str, TimerStore], receiver: Receiver
) -> None:
    mode, store = stack
    if mode != "per-principal":
        pytest.skip("needs a principal's own secret")
    _, shops = fire(store, receiver, owner="shop", payload={"team": "shop"})
    _, others = fire(store, receiver, owner="billing", payload={"team": "billing"})
    assert Webhook(SHOP_SECRET).verify(shops.raw, shops.headers) == {"team": "shop"}
    assert Webhook(OLD_SECRET).verify(others.raw, others.headers) == {"team": "billing"}
    # One signature each: neither can be made to pass for the other's receiver.
    for arrival, foreign in ((shops, OLD_SECRET), (others, SHOP_SECRET)):
        assert len(arrival.headers["webhook-signature"].split(" ")) == 1
        with pytest.raises(WebhookVerificationError):
            Webhook(foreign).verify(arrival.raw, arrival.headers)


def test_every_callback_was_recorded_completed(stack: tuple[str, TimerStore]) -> None:
    _, store = stack
    with store.engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM timers WHERE status <> 'completed'"))
        assert left.scalar_one() == 0
