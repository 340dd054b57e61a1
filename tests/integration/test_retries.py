"""Retries with backoff, the attempt history and redrive, with the real worker and scheduler, real
PostgreSQL and Redis and a receiver on 127.0.0.1 that answers as each test scripts it."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.receiver import Receiver, wait_until
from tests.support.services import API_KEY, LOCAL_NETWORKS, Services
from timers.api import create_app
from timers.config import Settings
from timers.store import TimerStore, database_engine

FINAL = {"completed", "failed"}


@pytest.fixture(scope="module")
def env(services: Services, template_database: str) -> Iterator[dict[str, str]]:
    name = create_database(services, template_database)
    broker = services.redis_database(2)
    redis.Redis.from_url(broker).flushdb()
    yield {
        "DATABASE_URL": services.database_url(name),
        "REDIS_URL": broker,
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "TIMERS_CALLBACK_TIMEOUT": "5",
    }
    redis.Redis.from_url(broker).flushdb()
    drop_database(services, name)


class Stack:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.worker = self.start_worker()
        self.scheduler = processes.scheduler(env)
        assert self.scheduler.wait_for_output("scheduler started", 30), self.scheduler.output()

    def start_worker(self) -> processes.Process:
        worker = processes.worker(self.env)
        assert worker.wait_for_output("ready", 60), worker.output()
        return worker

    def stop(self) -> None:
        self.scheduler.stop()
        self.worker.stop()


@pytest.fixture(scope="module")
def stack(env: dict[str, str]) -> Iterator[Stack]:
    running = Stack(env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def api(env: dict[str, str], stack: Stack) -> Iterator[TestClient]:
    settings = Settings(
        database_url=env["DATABASE_URL"], api_key=API_KEY, allowed_networks=(LOCAL_NETWORKS,)
    )
    store = TimerStore(database_engine(env["DATABASE_URL"]))
    with TestClient(create_app(settings, store=store), headers={"X-API-Key": API_KEY}) as client:
        yield client
    store.engine.dispose()


def create(api: TestClient, url: str, retry: dict[str, Any] | None, in_seconds: float = 0.5) -> str:
    body: dict[str, Any] = {
        "execute_at": (datetime.now(UTC) + timedelta(seconds=in_seconds)).isoformat(),
        "callback_config": {"url": url},
    }
    if retry is not None:
        body["retry"] = retry
    response = api.post("/timers", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def timer(api: TestClient, timer_id: str) -> dict[str, Any]:
    data: dict[str, Any] = api.get(f"/timers/{timer_id}").json()["data"]
    return data


def settle(api: TestClient, timer_id: str, timeout: float = 30) -> dict[str, Any]:
    assert wait_until(lambda: timer(api, timer_id)["status"] in FINAL, timeout), timer(
        api, timer_id
    )
    return timer(api, timer_id)


def gaps(receiver: Receiver, timer_id: str) -> list[float]:
    times = [a.at for a in receiver.for_timer(timer_id)]
    return [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]


def test_503_503_200_is_three_attempts_spaced_by_the_backoff(
    api: TestClient, receiver: Receiver
) -> None:
    policy = {"max_attempts": 5, "backoff": "fixed", "initial_delay": 1}
    timer_id = create(api, receiver.url("/sequence/503,503,200"), policy)
    done = settle(api, timer_id)
    assert done["status"] == "completed" and done["last_error"] is None
    assert len(receiver.for_timer(timer_id)) == 3
    assert all(gap >= 1.0 for gap in gaps(receiver, timer_id)), gaps(receiver, timer_id)
    history = done["history"]
    assert [h["outcome"] for h in history] == ["retrying", "retrying", "completed"]
    assert [h["status"] for h in history] == [503, 503, 200]
    assert [h["attempt"] for h in history] == [1, 2, 3]
    assert done["delivery_attempts"] == 3 and done["next_attempt_at"] is None


def test_retry_after_is_honoured(api: TestClient, receiver: Receiver) -> None:
    policy = {"max_attempts": 2, "initial_delay": 1, "max_delay": 60}
    timer_id = create(api, receiver.url("/status/429/retry-after/2"), policy)
    done = settle(api, timer_id)
    assert done["status"] == "failed" and done["last_error"] == "HTTP 429"
    [gap] = gaps(receiver, timer_id)
    assert gap >= 2.0


def test_410_gone_fails_after_one_attempt(api: TestClient, receiver: Receiver) -> None:
    timer_id = create(api, receiver.url("/status/410"), {"max_attempts": 5, "initial_delay": 1})
    done = settle(api, timer_id)
    assert done["status"] == "failed" and done["last_error"] == "HTTP 410"
    assert [h["outcome"] for h in done["history"]] == ["failed"]
    sentinel = create(api, receiver.url("/ok"), None, in_seconds=1)
    settle(api, sentinel)
    assert len(receiver.for_timer(timer_id)) == 1


def test_a_retry_that_waits_is_visible_and_can_be_canceled(
    api: TestClient, receiver: Receiver
) -> None:
    policy = {"max_attempts": 3, "backoff": "fixed", "initial_delay": 3}
    timer_id = create(api, receiver.url("/status/503"), policy)
    assert wait_until(lambda: timer(api, timer_id)["delivery_attempts"] == 1, 15)
    waiting = timer(api, timer_id)
    assert waiting["status"] == "pending" and waiting["last_error"] == "HTTP 503"
    assert waiting["next_attempt_at"] is not None
    assert api.delete(f"/timers/{timer_id}").status_code == 200
    sentinel = create(api, receiver.url("/ok"), None, in_seconds=4)
    settle(api, sentinel)
    assert len(receiver.for_timer(timer_id)) == 1
    assert timer(api, timer_id)["status"] == "canceled"


def test_redrive_fires_a_failed_timer_once_more_with_a_fresh_budget(
    api: TestClient, receiver: Receiver
) -> None:
    timer_id = create(api, receiver.url("/status/500"), None)
    assert settle(api, timer_id)["status"] == "failed"
    pending = api.post(f"/timers/{str(uuid.uuid4())}/retry")
    assert pending.status_code == 404
    again = api.post(f"/timers/{timer_id}/retry")
    assert again.status_code == 200 and again.json()["data"]["status"] == "pending"
    assert again.json()["data"]["delivery_attempts"] == 0
    assert wait_until(lambda: len(receiver.for_timer(timer_id)) == 2, 15)
    done = settle(api, timer_id)
    assert done["status"] == "failed" and len(done["history"]) == 2
    not_failed = create(api, receiver.url("/ok"), None, in_seconds=3600)
    refused = api.post(f"/timers/{not_failed}/retry")
    assert refused.status_code == 400 and "only failed timers" in refused.json()["message"]


def test_a_worker_killed_while_a_retry_waits_loses_nothing(
    api: TestClient, receiver: Receiver, stack: Stack
) -> None:
    policy = {"max_attempts": 3, "backoff": "fixed", "initial_delay": 3}
    timer_id = create(api, receiver.url("/sequence/503,200"), policy)
    assert wait_until(lambda: timer(api, timer_id)["delivery_attempts"] == 1, 15)
    os.killpg(stack.worker.popen.pid, signal.SIGKILL)
    stack.worker.popen.wait(10)
    stack.worker.stop()
    stack.worker = stack.start_worker()
    done = settle(api, timer_id)
    assert done["status"] == "completed" and len(receiver.for_timer(timer_id)) == 2
