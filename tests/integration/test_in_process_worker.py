"""The Celery side of timers with in-process workers (celery.contrib.testing): the task
`timers.execute_callbacks` and the drop-in `timers.celery.durable_eta`, each shown in
milliseconds where a `celery worker` subprocess takes seconds to start. Both brokers are Celery's
in-memory transport (nothing shared with other tests); PostgreSQL and the HTTP receiver are real.
What needs a real process (a killed or SIGTERM'd worker, a user's worker of its own) stays with
the subprocess tests (test_end_to_end, test_celery_tasks, test_worker_stop, tests/faults)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from celery import Celery
from celery.contrib import pytest as celery_fixtures
from celery.contrib.testing.worker import start_worker

import timers.celery
from tests.support.databases import create_database, drop_database
from tests.support.receiver import Receiver, wait_until
from tests.support.services import API_KEY, LOCAL_NETWORKS, Services
from timers.celery_app import create_celery_app
from timers.config import Settings
from timers.library import Timers
from timers.models import TimerStatus
from timers.store import NewTimer, TimerStore, database_engine
from timers.worker.enqueuer import BATCH_TASK_NAME

WAIT = 15.0

# Celery's in-process worker fixture: pytest-celery 1.x registers celery.contrib.pytest's fixtures
# (`celery_app`, `celery_config`, …) but replaces this one with a worker in a Docker container.
celery_worker = celery_fixtures.celery_worker


# Celery's in-memory transport polls its queues; every second by default.
FAST_POLLING = {"polling_interval": 0.01}


@pytest.fixture(scope="module")
def worker_settings(services: Services, template_database: str) -> Iterator[Settings]:
    name = create_database(services, template_database)
    yield Settings(
        database_url=services.database_url(name),
        redis_url="memory://",
        api_key=API_KEY,
        allowed_networks=(LOCAL_NETWORKS,),
        task_broker_url="memory://",  # the user's app below, in this process too
        task_broker_shared=True,
        celery_tasks=("shop.tasks.*",),
        celery_queues=("celery",),
    )
    drop_database(services, name)


@pytest.fixture(scope="module")
def store(worker_settings: Settings) -> Iterator[TimerStore]:
    engine = database_engine(worker_settings.require_database_url())
    yield TimerStore(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def timers_worker(worker_settings: Settings) -> Iterator[Celery]:
    """The timers app, as `celery -A timers.celery_app worker` builds it, in a worker thread."""
    app = create_celery_app(worker_settings)
    app.conf.broker_transport_options |= FAST_POLLING
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield app
    app.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def claim(store: TimerStore, timer_id: uuid.UUID) -> list[list[Any]]:
    """What the scheduler does when the timer is due: claim it, and name the claim."""
    claimed: list[Any] = []
    assert wait_until(lambda: claimed.extend(store.claim_due([timer_id])) or claimed, WAIT)  # type: ignore[func-returns-value]
    return [[str(timer_id), claimed[0].claim]]


def http_timer(store: TimerStore, receiver: Receiver) -> uuid.UUID:
    config = {"type": "http", "url": receiver.url(), "payload": {"order": 42}}
    return store.create(NewTimer(datetime.now(UTC), "http", config)).id


def test_execute_callbacks_delivers_a_claimed_timer_once(
    timers_worker: Celery, store: TimerStore, receiver: Receiver
) -> None:
    timer_id = http_timer(store, receiver)
    claims = claim(store, timer_id)
    timers_worker.send_task(BATCH_TASK_NAME, args=[claims])
    assert wait_until(lambda: store.get(timer_id).status is TimerStatus.COMPLETED, WAIT)
    [arrival] = receiver.for_timer(timer_id)
    assert arrival.body == {"order": 42}


def test_execute_callbacks_ignores_a_redelivered_or_malformed_message(
    timers_worker: Celery, store: TimerStore, receiver: Receiver
) -> None:
    timer_id = http_timer(store, receiver)
    claims = claim(store, timer_id)
    timers_worker.send_task(BATCH_TASK_NAME, args=[claims])
    assert wait_until(lambda: store.get(timer_id).status is TimerStatus.COMPLETED, WAIT)
    done = store.get(timer_id)
    for args in ([claims], [[["not-a-uuid", 1], [str(uuid.uuid4()), 1]]], ["not a list"], []):
        timers_worker.send_task(BATCH_TASK_NAME, args=args)
    # Messages are handled in order by the one solo worker: once this timer is delivered, every
    # message above has been handled.
    sentinel = http_timer(store, receiver)
    timers_worker.send_task(BATCH_TASK_NAME, args=[claim(store, sentinel)])
    assert wait_until(lambda: store.get(sentinel).status is TimerStatus.COMPLETED, WAIT)
    assert len(receiver.for_timer(timer_id)) == 1
    assert store.get(timer_id) == done


@pytest.fixture
def celery_config() -> dict[str, Any]:
    """The user's app (celery.contrib.pytest's `celery_app`): JSON, on the in-memory broker."""
    return {
        "broker_url": "memory://",
        "broker_transport_options": FAST_POLLING,
        "task_serializer": "json",
        "accept_content": ["json"],
    }


def test_durable_eta_publishes_the_users_task_under_the_timer_id(
    celery_app: Celery,
    celery_worker: Any,
    worker_settings: Settings,
    timers_worker: Celery,
    store: TimerStore,
) -> None:
    runs: list[tuple[str, int]] = []

    # A name of this test's own, not shared with other apps: another module's task of a common
    # name (a shared task) would otherwise be the one this app runs.
    @celery_app.task(name="shop.tasks.expire_order_in_process", bind=True, shared=False)
    def expire_order(self: Any, order_id: int) -> None:
        runs.append((self.request.id, order_id))

    celery_worker.reload()  # the user's worker knows the task defined above
    library = Timers(settings=worker_settings)
    try:
        timers.celery.durable_eta(celery_app, threshold=0.1, timers=library)
        result = expire_order.apply_async((42,), countdown=0.2)
        timer_id = uuid.UUID(result.id)  # the AsyncResult's id is the timer's
        assert store.get(timer_id).status is TimerStatus.PENDING
        # Run here rather than through the timers worker: the solo pool traces a task through
        # Celery's current app, which the `celery_app` fixture makes the user's for this test.
        timers_worker.tasks[BATCH_TASK_NAME].apply(args=[claim(store, timer_id)])
        assert wait_until(lambda: runs, WAIT)
        assert runs == [(result.id, 42)]
        assert store.get(timer_id).status is TimerStatus.COMPLETED
    finally:
        library.close()
