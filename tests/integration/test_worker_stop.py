"""A worker that is asked to stop (SIGTERM, a deploy) lets the deliveries it started finish and
records them, instead of leaving them to recovery (which would send them again)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.receiver import Receiver, wait_until
from tests.support.services import LOCAL_NETWORKS, Services
from tests.support.timers import add_timer
from timers.models import TimerStatus
from timers.store import TimerStore, database_engine


@pytest.fixture
def env(services: Services, template_database: str) -> Iterator[dict[str, str]]:
    name = create_database(services, template_database)
    broker = services.redis_database(7)
    redis.Redis.from_url(broker).flushdb()
    yield {
        "DATABASE_URL": services.database_url(name),
        "REDIS_URL": broker,
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "TIMERS_CALLBACK_TIMEOUT": "10",
    }
    redis.Redis.from_url(broker).flushdb()
    drop_database(services, name)


def test_sigterm_lets_running_deliveries_finish_and_records_them(env: dict[str, str]) -> None:
    engine = database_engine(env["DATABASE_URL"])
    store = TimerStore(engine)
    receiver = Receiver().start()
    worker = processes.worker(env)
    scheduler = processes.scheduler(env)
    try:
        assert worker.wait_for_output("ready", 60), worker.output()
        assert scheduler.wait_for_output("scheduler started", 30), scheduler.output()
        timers = [
            add_timer(store, datetime.now(UTC), url=receiver.url("/slow/2")) for _ in range(5)
        ]
        assert wait_until(lambda: len(receiver.arrivals) == 5, 15)
        worker.signal(signal.SIGTERM)  # while all five receivers are still answering
        assert worker.popen.wait(30) == 0
        assert [store.get(t.id).status for t in timers] == [TimerStatus.COMPLETED] * 5
        assert all(len(receiver.for_timer(t.id)) == 1 for t in timers)
    finally:
        scheduler.stop()
        worker.stop()
        receiver.stop()
        engine.dispose()
