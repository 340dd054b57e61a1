"""End to end: the REST API, the real scheduler and Celery worker commands as subprocesses, real
PostgreSQL, a real Redis broker and a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.receiver import Receiver, wait_until
from tests.support.services import API_KEY, LOCAL_NETWORKS, Services
from timers import __version__
from timers.api import create_app
from timers.celery_app import create_celery_app
from timers.config import Settings
from timers.models import TimerStatus
from timers.storage import TimerFilter
from timers.store import NewTimer, TimerStore, database_engine
from timers.worker.tasks import BATCH_TASK_NAME, TASK_NAME

CALLBACK_TIMEOUT = 2


@pytest.fixture(scope="module")
def e2e_settings(services: Services, template_database: str) -> Iterator[Settings]:
    name = create_database(services, template_database)
    broker = services.redis_database(9)
    redis.Redis.from_url(broker).flushdb()
    yield Settings(
        database_url=services.database_url(name),
        redis_url=broker,
        api_key=API_KEY,
        callback_timeout=CALLBACK_TIMEOUT,
        allowed_networks=(LOCAL_NETWORKS,),
    )
    redis.Redis.from_url(broker).flushdb()
    drop_database(services, name)


@pytest.fixture(scope="module")
def env(e2e_settings: Settings) -> dict[str, str]:
    return {
        "DATABASE_URL": e2e_settings.database_url or "",
        "REDIS_URL": e2e_settings.redis_url or "",
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "TIMERS_CALLBACK_TIMEOUT": str(CALLBACK_TIMEOUT),
        "TIMERS_LOAD_INTERVAL": "1",
        "TIMERS_EXECUTE_INTERVAL": "0.1",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="module")
def worker(env: dict[str, str]) -> Iterator[processes.Process]:
    proc = processes.worker(env)
    assert proc.wait_for_output("ready", 60), proc.output()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def scheduler(env: dict[str, str], worker: processes.Process) -> Iterator[processes.Process]:
    proc = processes.scheduler(env)
    assert proc.wait_for_output("scheduler started", 30), proc.output()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def e2e_store(e2e_settings: Settings) -> Iterator[TimerStore]:
    engine = database_engine(e2e_settings.database_url or "")
    yield TimerStore(engine)
    engine.dispose()


@pytest.fixture
def running(
    e2e_store: TimerStore, receiver: Receiver, scheduler: processes.Process
) -> Iterator[None]:
    """A clean table and receiver for each test; the processes keep running across tests."""
    with e2e_store.engine.begin() as conn:
        conn.execute(text("TRUNCATE timers"))
    receiver.clear()
    yield
    left = e2e_store.engine.pool.checkedout()  # type: ignore[attr-defined]
    assert left == 0


@pytest.fixture
def client(e2e_settings: Settings, e2e_store: TimerStore) -> Iterator[TestClient]:
    app = create_app(e2e_settings, store=e2e_store)
    with TestClient(app, headers={"X-API-Key": API_KEY}) as c:
        yield c


def create_timer(client: TestClient, url: str, in_seconds: float, **config: Any) -> uuid.UUID:
    at = datetime.now(UTC) + timedelta(seconds=in_seconds)
    response = client.post(
        "/timers",
        json={
            "execute_at": at.isoformat(),
            "callback_type": "http",
            "callback_config": {"type": "http", "url": url, **config},
        },
    )
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["data"]["id"])


def after(client: TestClient, receiver: Receiver, seconds: float) -> None:
    """Wait until a timer due `seconds` from now has been delivered: whatever was due before it
    has had its chance to arrive too."""
    sentinel = create_timer(client, receiver.url("/sentinel"), seconds)
    assert wait_until(lambda: receiver.for_timer(sentinel), seconds + 15)


def wait_for_status(store: TimerStore, timer_id: uuid.UUID, timeout: float) -> TimerStatus:
    final = {TimerStatus.COMPLETED, TimerStatus.FAILED}
    wait_until(lambda: store.get(timer_id).status in final, timeout)
    return store.get(timer_id).status


@pytest.mark.usefixtures("running")
def test_timer_due_in_2s_calls_back_exactly_once_with_payload_and_headers(
    client: TestClient, receiver: Receiver, e2e_store: TimerStore
) -> None:
    payload = {"order": 42, "items": ["a", "b"], "note": "héllo"}
    timer_id = create_timer(
        client, receiver.url("/hook"), 2, payload=payload, headers={"Authorization": "Bearer t0k"}
    )
    due = e2e_store.get(timer_id).execute_at
    assert wait_for_status(e2e_store, timer_id, 15) is TimerStatus.COMPLETED
    after(client, receiver, 1)  # a duplicate would have shown up by then
    arrivals = receiver.for_timer(timer_id)
    assert len(arrivals) == 1
    arrival = arrivals[0]
    assert arrival.path == "/hook"
    assert arrival.body == payload
    assert arrival.headers["Authorization"] == "Bearer t0k"
    assert arrival.headers["Content-Type"] == "application/json"
    assert arrival.headers["User-Agent"] == f"timers/{__version__}"
    assert arrival.at >= due
    timer = client.get(f"/timers/{timer_id}").json()["data"]
    assert timer["status"] == "completed"
    assert timer["executed_at"] is not None and timer["last_error"] is None
    assert datetime.fromisoformat(timer["executed_at"]) >= due


@pytest.mark.usefixtures("running")
def test_receiver_answering_500_fails_the_timer(
    client: TestClient, receiver: Receiver, e2e_store: TimerStore
) -> None:
    timer_id = create_timer(client, receiver.url("/status/500"), 0.5)
    assert wait_for_status(e2e_store, timer_id, 15) is TimerStatus.FAILED
    timer = e2e_store.get(timer_id)
    assert timer.last_error == "HTTP 500"
    assert timer.executed_at is not None
    assert len(receiver.for_timer(timer_id)) == 1


@pytest.mark.usefixtures("running")
def test_receiver_that_never_answers_fails_with_a_timeout(
    client: TestClient, receiver: Receiver, e2e_store: TimerStore
) -> None:
    timer_id = create_timer(client, receiver.url("/hang"), 0.5)
    assert wait_for_status(e2e_store, timer_id, 20) is TimerStatus.FAILED
    assert e2e_store.get(timer_id).last_error == f"timeout after {CALLBACK_TIMEOUT}s"


@pytest.mark.usefixtures("running")
def test_connection_refused_fails_the_timer(client: TestClient, e2e_store: TimerStore) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    timer_id = create_timer(client, f"http://127.0.0.1:{port}/hook", 0.5)
    assert wait_for_status(e2e_store, timer_id, 15) is TimerStatus.FAILED
    error = e2e_store.get(timer_id).last_error or ""
    assert error.startswith("connection error:"), error
    assert "refused" in error.lower(), error


@pytest.mark.usefixtures("running")
def test_canceled_before_due_is_never_called(
    client: TestClient, receiver: Receiver, e2e_store: TimerStore
) -> None:
    timer_id = create_timer(client, receiver.url(), 2)
    time.sleep(1.2)  # the scheduler's cache has it by now (nothing outside shows that)
    assert client.delete(f"/timers/{timer_id}").status_code == 200
    after(client, receiver, 1.5)  # past its old due time
    assert receiver.for_timer(timer_id) == []
    assert e2e_store.get(timer_id).status is TimerStatus.CANCELED


@pytest.mark.usefixtures("running")
def test_postponed_after_caching_is_called_at_the_new_time_not_the_old(
    client: TestClient, receiver: Receiver, e2e_store: TimerStore
) -> None:
    timer_id = create_timer(client, receiver.url(), 2)
    time.sleep(1.2)  # cached with the old time
    new_at = datetime.now(UTC) + timedelta(seconds=4)
    response = client.put(f"/timers/{timer_id}", json={"execute_at": new_at.isoformat()})
    assert response.status_code == 200
    assert wait_for_status(e2e_store, timer_id, 15) is TimerStatus.COMPLETED
    arrivals = receiver.for_timer(timer_id)
    assert len(arrivals) == 1
    assert arrivals[0].at >= new_at


@pytest.mark.usefixtures("running")
def test_invalid_stored_config_fails_that_timer_only(
    client: TestClient, receiver: Receiver, e2e_store: TimerStore
) -> None:
    good = create_timer(client, receiver.url(), 1)
    bad = create_timer(client, receiver.url(), 1)
    # Corrupt one row behind the API's back, as an old version or a manual edit might.
    with e2e_store.engine.begin() as conn:
        conn.execute(
            text("UPDATE timers SET callback_config = '{\"url\": 5}' WHERE id = :i"), {"i": bad}
        )
    assert wait_for_status(e2e_store, bad, 15) is TimerStatus.FAILED
    assert (e2e_store.get(bad).last_error or "").startswith("invalid callback_config:")
    assert wait_for_status(e2e_store, good, 15) is TimerStatus.COMPLETED


@pytest.mark.usefixtures("running")
def test_redelivered_task_for_a_completed_timer_does_nothing(
    client: TestClient,
    receiver: Receiver,
    e2e_store: TimerStore,
    e2e_settings: Settings,
    worker: processes.Process,
) -> None:
    timer_id = create_timer(client, receiver.url(), 0.5)
    assert wait_for_status(e2e_store, timer_id, 15) is TimerStatus.COMPLETED
    before = e2e_store.get(timer_id)
    app = create_celery_app(e2e_settings)
    try:
        app.send_task(BATCH_TASK_NAME, args=[[[str(timer_id), before.claims]]])
        app.send_task(BATCH_TASK_NAME, args=[[["not-a-uuid", 1], [str(uuid.uuid4()), 1]]])
        app.send_task(BATCH_TASK_NAME, args=["not a list"])
        app.send_task(BATCH_TASK_NAME, args=[])  # not even the right arguments
        app.send_task(TASK_NAME, args=[str(timer_id), "two"])  # the earlier single-timer task
    finally:
        app.close()
    # Every message was taken and acknowledged (none left waiting or unacknowledged) ...
    broker = redis.Redis.from_url(e2e_settings.redis_url or "")
    assert wait_until(lambda: broker.llen("timers") == 0 and broker.hlen("unacked") == 0, 10)
    # ... and the worker is still serving.
    after = create_timer(client, receiver.url(), 0.5)
    assert wait_for_status(e2e_store, after, 15) is TimerStatus.COMPLETED
    assert len(receiver.for_timer(timer_id)) == 1
    assert e2e_store.get(timer_id) == before


@pytest.mark.usefixtures("running")
def test_two_scheduler_processes_call_each_of_1000_timers_exactly_once(
    env: dict[str, str], receiver: Receiver, e2e_store: TimerStore
) -> None:
    count = 1000
    second = processes.scheduler(env, name="scheduler-2")
    try:
        assert second.wait_for_output("scheduler started", 30), second.output()
        start = datetime.now(UTC) + timedelta(seconds=2)
        ids = set()
        for i in range(count):
            timer = e2e_store.create(
                NewTimer(
                    execute_at=start + timedelta(milliseconds=3 * i),
                    callback_type="http",
                    callback_config={"type": "http", "url": receiver.url(), "payload": {"i": i}},
                )
            )
            ids.add(str(timer.id))

        def all_done() -> bool:
            page = e2e_store.page(where=TimerFilter(status=TimerStatus.COMPLETED), limit=1)
            return page.total == count

        assert wait_until(all_done, 90, interval=0.5), e2e_store.page(limit=1).total
    finally:
        second.stop()
    counts = receiver.count_by_timer()
    assert set(counts) == ids
    duplicates = {k: v for k, v in counts.items() if v > 1}
    assert duplicates == {}
    # Both schedulers did part of the work.
    assert "Spawned callback for timer" in second.output()


@pytest.mark.usefixtures("running")
def test_timers_due_together_travel_in_one_task_and_each_gets_its_outcome(
    receiver: Receiver, e2e_store: TimerStore, worker: processes.Process
) -> None:
    at = datetime.now(UTC) + timedelta(seconds=1.5)
    urls = [receiver.url("/ok"), receiver.url("/status/500")] * 15
    ids = [
        e2e_store.create(
            NewTimer(
                execute_at=at,
                callback_type="http",
                callback_config={"type": "http", "url": url, "payload": {"i": i}},
            )
        ).id
        for i, url in enumerate(urls)
    ]
    for timer_id, url in zip(ids, urls, strict=True):
        expected = TimerStatus.COMPLETED if url.endswith("/ok") else TimerStatus.FAILED
        assert wait_for_status(e2e_store, timer_id, 15) is expected
        assert len(receiver.for_timer(timer_id)) == 1
    # All due together: one task started all of them, in one statement (one `now()`).
    assert len({e2e_store.get(timer_id).started_at for timer_id in ids}) == 1
