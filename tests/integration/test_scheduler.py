"""The seed's acceptance criteria against real PostgreSQL and a real Redis broker.

The loops run in-process with an injected clock; their Celery messages land in a real Redis queue
that these tests read back (no worker consumes this database). The decisions the in-memory store
shows as well are tested there alone (tests/unit/test_decisions.py: claimed timers leave the cache;
canceled, postponed and already claimed timers are not enqueued; a database outage keeps the cache),
and the store's side of them by the contract suite on both stores.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import text

from tests.support.broker import queued_timer_ids
from tests.support.receiver import wait_until
from tests.support.services import Services
from tests.support.timers import add_timer, now
from timers.celery_app import create_celery_app
from timers.config import Settings
from timers.models import Claimed, TimerStatus
from timers.scheduler import (
    ChangeListener,
    ExecutionLoop,
    MemoryLoader,
    Scheduler,
    TimerCache,
)
from timers.storage import RecoveryRules, TimerFilter
from timers.store import NearTerm, TimerStore, database_engine
from timers.worker.enqueuer import CeleryEnqueuer


@pytest.fixture
def broker_url(services: Services) -> Iterator[str]:
    url = services.redis_database(10)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def celery_app(settings: Settings, broker_url: str) -> Iterator[Celery]:
    app = create_celery_app(Settings(database_url=settings.database_url, redis_url=broker_url))
    yield app
    app.close()


def loader_for(store: TimerStore, cache: TimerCache, clock: Any = now) -> MemoryLoader:
    return MemoryLoader(store, cache, recovery_window=300, lookahead=60, clock=clock)


def test_start_scheduler_spawns_two_independent_loops(
    store: TimerStore, celery_app: Celery, broker_url: str
) -> None:
    """A load that hangs does not hold up the execution loop."""
    cache = TimerCache()
    load_started, release_load = threading.Event(), threading.Event()

    class StuckLoader(MemoryLoader):
        # The first load (at start) is real; later ones hang until released.
        calls = 0

        def load(self) -> int | None:
            self.calls += 1
            if self.calls > 1:
                load_started.set()
                release_load.wait(10)
            return super().load()

    timer = add_timer(store, now() - timedelta(seconds=1))
    loader = StuckLoader(store, cache, recovery_window=300, lookahead=60)
    execution = ExecutionLoop(store, cache, CeleryEnqueuer(celery_app))
    scheduler = Scheduler(loader, execution, load_interval=0.05, execute_interval=0.05)
    scheduler.start()
    try:
        assert {t.name for t in threading.enumerate()} >= {"memory-loader", "execution-loop"}
        assert load_started.wait(5)
        assert wait_status(store, timer.id, TimerStatus.EXECUTING, 5)
    finally:
        release_load.set()
        scheduler.stop()
    assert queued_timer_ids(broker_url) == [str(timer.id)]


def test_memory_loader_replaces_entire_cache(store: TimerStore) -> None:
    cache = TimerCache()
    stale = add_timer(store, now() + timedelta(seconds=10))
    loader = loader_for(store, cache)
    loader.load()
    assert stale.id in cache
    store.cancel(stale.id)
    fresh = add_timer(store, now() + timedelta(seconds=20))
    assert loader.load() == 1
    assert stale.id not in cache and fresh.id in cache and len(cache) == 1


def test_memory_loader_loads_timers_in_window_now_minus_5_minutes_to_now_plus_1_minute(
    store: TimerStore,
) -> None:
    base = now()
    # The injected clock is pinned; the database holds timers on both sides of each edge.
    inside = [
        add_timer(store, base - timedelta(seconds=299)),
        add_timer(store, base),
        add_timer(store, base + timedelta(seconds=59)),
        add_timer(store, base + timedelta(seconds=60)),
    ]
    outside = [
        add_timer(store, base - timedelta(seconds=301)),
        add_timer(store, base + timedelta(seconds=61)),
    ]
    canceled = add_timer(store, base + timedelta(seconds=5))
    store.cancel(canceled.id)
    cache = TimerCache()
    assert loader_for(store, cache, clock=lambda: base).load() == len(inside)
    assert all(t.id in cache for t in inside)
    assert not any(t.id in cache for t in [*outside, canceled])


def test_execution_task_only_processes_timers_where_execute_at_is_due(
    store: TimerStore, celery_app: Celery, broker_url: str
) -> None:
    due = add_timer(store, now() - timedelta(seconds=2))
    later = add_timer(store, now() + timedelta(seconds=30))
    cache = TimerCache()
    loader_for(store, cache).load()
    assert ExecutionLoop(store, cache, CeleryEnqueuer(celery_app)).tick() == 1
    assert store.get(due.id).status is TimerStatus.EXECUTING
    assert store.get(later.id).status is TimerStatus.PENDING
    assert later.id in cache
    assert queued_timer_ids(broker_url) == [str(due.id)]


def test_each_callback_executes_in_its_own_task(
    store: TimerStore, celery_app: Celery, broker_url: str
) -> None:
    timers = [add_timer(store, now() - timedelta(milliseconds=i)) for i in range(25)]
    cache = TimerCache()
    loader_for(store, cache).load()
    assert ExecutionLoop(store, cache, CeleryEnqueuer(celery_app)).tick() == 25
    assert sorted(queued_timer_ids(broker_url)) == sorted(str(t.id) for t in timers)


def test_two_claims_of_the_same_timers_never_both_win(store: TimerStore) -> None:
    timers = [add_timer(store, now() - timedelta(seconds=1)) for _ in range(200)]
    ids = [t.id for t in timers]
    results: list[list[Claimed]] = []
    other = TimerStore(database_engine(str(store.engine.url.render_as_string(False))))

    def claim(s: TimerStore) -> None:
        results.append(s.claim_due(ids))

    threads = [threading.Thread(target=claim, args=(s,)) for s in (store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.engine.dispose()
    claimed = [t.id for batch in results for t in batch]
    assert sorted(claimed) == sorted(ids)


def test_errors_in_one_timer_dont_affect_other_timers(
    store: TimerStore, celery_app: Celery, broker_url: str
) -> None:
    """The broker refuses one timer's message: that one goes back to pending, the others fire."""
    timers = [add_timer(store, now() - timedelta(seconds=1)) for _ in range(3)]
    refused = timers[1].id

    class RefusingEnqueuer(CeleryEnqueuer):
        # A stand-in for a broker that refuses one message; the others go to real Redis.
        def enqueue(self, batch: Sequence[Claimed]) -> list[uuid.UUID]:
            return [refused, *super().enqueue([t for t in batch if t.id != refused])]

    cache = TimerCache()
    loader_for(store, cache).load()
    assert ExecutionLoop(store, cache, RefusingEnqueuer(celery_app)).tick() == 2
    assert store.get(refused).status is TimerStatus.PENDING
    assert sorted(queued_timer_ids(broker_url)) == sorted(
        str(t.id) for t in timers if t.id != refused
    )
    # The released timer fires on a later tick once it is loaded again.
    loader_for(store, cache).load()
    assert ExecutionLoop(store, cache, CeleryEnqueuer(celery_app)).tick() == 1
    assert store.get(refused).claims == 2


def test_broker_down_stops_the_tick_and_claims_nothing_until_it_is_back(
    store: TimerStore, settings: Settings, celery_app: Celery, broker_url: str
) -> None:
    timers = [add_timer(store, now() - timedelta(seconds=1)) for _ in range(6)]
    down = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    cache = TimerCache()
    loader_for(store, cache).load()
    enqueuer = CeleryEnqueuer(down, per_task=2)
    loop = ExecutionLoop(store, cache, enqueuer, batch_size=2)
    assert loop.tick() == 0
    # The first batch was claimed, refused and released; the tick stopped there.
    assert sorted(store.get(t.id).claims for t in timers) == [0, 0, 0, 0, 1, 1]
    assert all(store.get(t.id).status is TimerStatus.PENDING for t in timers)
    loader_for(store, cache).load()
    for _ in range(3):  # ticks while the broker stays down: no claim, no release
        assert loop.tick() == 0
    assert sorted(store.get(t.id).claims for t in timers) == [0, 0, 0, 0, 1, 1]
    # The broker is back (here: the enqueuer's app points at a live one).
    enqueuer.app = celery_app
    assert loop.tick() == 6
    assert sorted(queued_timer_ids(broker_url)) == sorted(str(t.id) for t in timers)


def test_both_tasks_log_their_activity(
    store: TimerStore, celery_app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    timers = [add_timer(store, now() - timedelta(seconds=1)) for _ in range(2)]
    add_timer(store, now() + timedelta(seconds=30))
    cache = TimerCache()
    with caplog.at_level(logging.INFO, logger="timers.scheduler"):
        loader_for(store, cache).load()
        ExecutionLoop(store, cache, CeleryEnqueuer(celery_app)).tick()
    assert "Loaded 3 timers into cache" in caplog.messages
    assert "Executing 2 due timers" in caplog.messages
    for t in timers:
        assert f"Spawned callback for timer {t.id}" in caplog.messages


def cache_is_free(cache: TimerCache) -> bool:
    """Whether another thread can use the cache right now (nobody holds it across this call)."""
    done = threading.Event()
    threading.Thread(target=lambda: (len(cache), done.set()), daemon=True).start()  # type: ignore[func-returns-value]
    return done.wait(2)


class LockWatchingStore(TimerStore):
    """The real store, recording whether the cache was free for other threads during each I/O
    call."""

    def __init__(self, store: TimerStore, cache: TimerCache) -> None:
        super().__init__(store.engine)
        self.cache = cache
        self.free_during_io: list[bool] = []

    def load_near_term(
        self,
        start: datetime | None,
        end: datetime,
        limit: int = 100_000,
        recovery: RecoveryRules | None = None,
        schedules_within: float | None = None,
    ) -> NearTerm:
        self.free_during_io.append(cache_is_free(self.cache))
        return super().load_near_term(start, end, limit, recovery, schedules_within)

    def claim_due(self, timer_ids: Sequence[uuid.UUID]) -> list[Claimed]:
        self.free_during_io.append(cache_is_free(self.cache))
        return super().claim_due(timer_ids)


def test_read_locks_released_before_spawning_and_write_lock_held_briefly(
    store: TimerStore, celery_app: Celery
) -> None:
    add_timer(store, now() - timedelta(seconds=1))
    cache = TimerCache()
    watching = LockWatchingStore(store, cache)

    class LockWatchingEnqueuer(CeleryEnqueuer):
        def enqueue(self, batch: Sequence[Claimed]) -> list[uuid.UUID]:
            watching.free_during_io.append(cache_is_free(cache))
            return super().enqueue(batch)

    loader_for(watching, cache).load()
    ExecutionLoop(watching, cache, LockWatchingEnqueuer(celery_app)).tick()
    assert watching.free_during_io == [True, True, True]


def test_updated_at_is_kept_right_by_every_update(store: TimerStore) -> None:
    timer = add_timer(store, now() + timedelta(seconds=1))
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE timers SET metadata = '{}' WHERE id = :i"), {"i": timer.id})
    assert store.get(timer.id).updated_at > timer.updated_at


def test_a_stop_request_ends_a_large_tick_between_batches(
    store: TimerStore, celery_app: Celery, broker_url: str
) -> None:
    for _ in range(12):
        add_timer(store, now() - timedelta(seconds=1))
    cache = TimerCache()
    loader_for(store, cache).load()
    batches = []

    def stopping() -> bool:
        batches.append(1)
        return True  # asked to stop as soon as the first batch is out

    loop = ExecutionLoop(store, cache, CeleryEnqueuer(celery_app), batch_size=5, stopping=stopping)
    assert loop.tick() == 5
    assert len(queued_timer_ids(broker_url)) == 5
    assert store.page(where=TimerFilter(status=TimerStatus.EXECUTING)).total == 5
    assert store.page(where=TimerFilter(status=TimerStatus.PENDING)).total == 7
    assert len(cache) == 7  # the rest stays cached for the next scheduler


def running_scheduler(
    store: TimerStore,
    celery_app: Celery,
    *,
    load_interval: float,
    listen: bool,
    execute_interval: float = 0.2,
) -> Scheduler:
    cache = TimerCache()
    stop = threading.Event()
    wake = threading.Event() if listen else None
    loader = ListeningLoader(store, cache, recovery_window=300, lookahead=60)
    execution = ExecutionLoop(store, cache, CeleryEnqueuer(celery_app), stopping=stop.is_set)
    listener = ChangeListener(store, cache, loader, wake) if wake else None
    scheduler = Scheduler(
        loader,
        execution,
        load_interval=load_interval,
        execute_interval=execute_interval,
        stop=stop,
        listener=listener,
        wake=wake,
    )
    scheduler.start()
    if listen:
        assert loader.wait_listening(), "the change listener never started listening"
    return scheduler


def wait_status(
    store: TimerStore, timer_id: uuid.UUID, status: TimerStatus, timeout: float
) -> bool:
    return wait_until(lambda: store.get(timer_id).status is status, timeout, interval=0.02)


class ListeningLoader(MemoryLoader):
    """Counts loads: the change listener loads once it is listening (after the load at start)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loads = 0
        self.loaded = threading.Condition()

    def load(self) -> int | None:
        result = super().load()
        with self.loaded:
            self.loads += 1
            self.loaded.notify_all()
        return result

    def wait_listening(self, timeout: float = 10) -> bool:
        with self.loaded:
            return self.loaded.wait_for(lambda: self.loads >= 2, timeout)


def test_a_timer_created_after_the_load_fires_without_waiting_for_the_next_load(
    store: TimerStore, celery_app: Celery, broker_url: str
) -> None:
    scheduler = running_scheduler(store, celery_app, load_interval=3600, listen=True)
    try:
        timer = add_timer(store, now() + timedelta(seconds=1))
        assert wait_status(store, timer.id, TimerStatus.EXECUTING, 10)
        claimed = store.get(timer.id)
        assert claimed.claims == 1
    finally:
        scheduler.stop()
    assert queued_timer_ids(broker_url) == [str(timer.id)]


def test_postponed_and_canceled_timers_follow_their_notifications(
    store: TimerStore, celery_app: Celery, broker_url: str
) -> None:
    soon = add_timer(store, now() + timedelta(seconds=1))
    doomed = add_timer(store, now() + timedelta(seconds=1))
    scheduler = running_scheduler(store, celery_app, load_interval=3600, listen=True)
    try:
        new_at = now() + timedelta(seconds=2)
        store.update_pending(soon.id, {"execute_at": new_at})
        store.cancel(doomed.id)
        assert wait_status(store, soon.id, TimerStatus.EXECUTING, 10)
        claimed_at = store.get(soon.id).claimed_at
        # The canceled one was due a second before: had it fired, it would be queued by now.
        assert claimed_at is not None and claimed_at >= new_at
    finally:
        scheduler.stop()
    assert queued_timer_ids(broker_url) == [str(soon.id)]
    assert store.get(doomed.id).status is TimerStatus.CANCELED


def test_with_notifications_dropped_every_timer_still_fires_on_the_reload(
    store: TimerStore, celery_app: Celery, broker_url: str
) -> None:
    # No notification is ever sent: only the periodic reload can find these timers.
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE timers DISABLE TRIGGER timers_notify_change"))
    scheduler = running_scheduler(store, celery_app, load_interval=1, listen=True)
    try:
        timers = [add_timer(store, now() + timedelta(seconds=0.5)) for _ in range(20)]
        for timer in timers:
            assert wait_status(store, timer.id, TimerStatus.EXECUTING, 10)
    finally:
        scheduler.stop()
    assert sorted(queued_timer_ids(broker_url)) == sorted(str(t.id) for t in timers)


def test_timers_due_back_to_back_fire_on_wake_ups_not_on_the_tick(
    store: TimerStore, celery_app: Celery, broker_url: str
) -> None:
    start = now() + timedelta(seconds=1)
    # 200 timers 5 ms apart; the tick is an hour long, so only wake-ups can fire them.
    timers = [add_timer(store, start + timedelta(milliseconds=5 * i)) for i in range(200)]
    scheduler = running_scheduler(
        store, celery_app, load_interval=3600, listen=True, execute_interval=3600
    )
    try:
        assert wait_status(store, timers[-1].id, TimerStatus.EXECUTING, 10)
    finally:
        scheduler.stop()
    assert sorted(queued_timer_ids(broker_url)) == sorted(str(t.id) for t in timers)
