"""The scheduler's decisions (claim, release, refresh, recovery, misfires, change notifications) on
the in-memory twins of the store and the broker, with a clock moved by hand: milliseconds each.
tests/contract shows the twins behave as PostgreSQL and Celery do; tests/integration runs the same
loops against the real ones."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

from timers.models import TimerStatus
from timers.scheduler import ChangeListener, ExecutionLoop, MemoryLoader, Recovery, TimerCache
from timers.storage import LOST_CLAIM, Change, NewTimer
from timers.testing import InMemoryStore, ManualClock, RecordingEnqueuer


class World:
    def __init__(self, *, per_task: int = 50, batch_size: int = 500) -> None:
        self.clock = ManualClock()
        self.store = InMemoryStore(self.clock)
        self.cache = TimerCache()
        self.enqueuer = RecordingEnqueuer(per_task=per_task)
        self.broker_idle = True
        self.recovery = Recovery(enqueue_timeout=15, lease=15, queue_idle=lambda: self.broker_idle)
        self.loader = MemoryLoader(
            self.store,
            self.cache,
            recovery_window=300,
            lookahead=60,
            clock=self.clock,
            recovery=self.recovery,
            fire_overdue=True,
        )
        self.execution = ExecutionLoop(
            self.store, self.cache, self.enqueuer, clock=self.clock, batch_size=batch_size
        )

    def add(self, in_seconds: float = -1.0) -> uuid.UUID:
        at = self.clock() + timedelta(seconds=in_seconds)
        return self.store.create(NewTimer(at, "http", {"type": "http", "url": "http://x/"})).id

    def status(self, timer_id: uuid.UUID) -> TimerStatus:
        return self.store.get(timer_id).status

    def sent(self) -> list[uuid.UUID]:
        return [timer_id for timer_id, _ in self.enqueuer.sent]


def test_due_timers_are_claimed_and_enqueued_together_and_leave_the_cache() -> None:
    w = World(per_task=2)
    due = [w.add(-1) for _ in range(3)]
    later = w.add(30)
    w.loader.load()
    assert w.execution.tick() == 3
    assert sorted(w.sent()) == sorted(due)
    assert [len(m) for m in w.enqueuer.messages] == [2, 1]
    assert all(t not in w.cache for t in due) and later in w.cache
    assert w.status(later) is TimerStatus.PENDING


def test_canceled_postponed_and_already_claimed_timers_are_not_enqueued() -> None:
    w = World()
    fire, canceled, postponed = w.add(), w.add(), w.add()
    w.loader.load()
    w.store.cancel(canceled)
    w.store.update_pending(postponed, {"execute_at": w.clock() + timedelta(seconds=30)})
    assert w.execution.tick() == 1
    # The postponed one is back in the cache at its new time; the canceled one is gone.
    assert postponed in w.cache and canceled not in w.cache
    # A stale reload puts the claimed timer back in the cache: it is not enqueued twice.
    w.cache.replace([w.store.get(fire)])
    assert w.execution.tick() == 0
    assert w.sent() == [fire]


def test_a_refused_enqueue_releases_its_claims_and_ends_the_tick() -> None:
    w = World(per_task=2, batch_size=2)
    ids = [w.add() for _ in range(6)]
    w.loader.load()
    w.enqueuer.down = True
    assert w.execution.tick() == 0
    claims = sorted(w.store.get(i).claims for i in ids)
    assert claims == [0, 0, 0, 0, 1, 1]  # one batch claimed, refused, released; then stop
    assert all(w.status(i) is TimerStatus.PENDING for i in ids)
    w.loader.load()
    for _ in range(5):  # the broker stays down: no claim, no release
        w.clock.advance(1)
        assert w.execution.tick() == 0
    assert sorted(w.store.get(i).claims for i in ids) == claims
    w.enqueuer.down = False
    assert w.execution.tick() == 6
    assert sorted(w.sent()) == sorted(ids)


def test_a_database_outage_keeps_the_timers_cached_for_the_next_tick() -> None:
    w = World()
    a = w.add()
    w.loader.load()
    w.store.unavailable = True
    assert w.execution.tick() == 0
    assert w.loader.load() is None  # a failed load leaves the cache as it was
    assert a in w.cache
    w.store.unavailable = False
    assert w.execution.tick() == 1
    assert w.sent() == [a]


def test_a_claim_that_no_worker_started_fires_again_after_the_enqueue_timeout() -> None:
    w = World()
    a = w.add()
    w.loader.load()
    w.execution.tick()  # enqueued, but the message is lost
    w.clock.advance(10)
    w.loader.load()
    assert w.status(a) is TimerStatus.EXECUTING  # within the enqueue timeout
    w.clock.advance(10)
    w.broker_idle = False  # its message may be waiting in a long queue
    w.loader.load()
    assert w.status(a) is TimerStatus.EXECUTING
    w.broker_idle = True
    w.loader.load()
    assert w.store.get(a).last_error == LOST_CLAIM and a in w.cache
    assert w.execution.tick() == 1
    assert w.enqueuer.sent == [(a, 1), (a, 2)]  # the old message is for an old claim


def test_a_dead_workers_delivery_fires_again_at_the_first_load_after_its_lease() -> None:
    w = World()
    a = w.add()
    w.loader.load()
    w.execution.tick()
    w.store.begin_deliveries([(a, 1)], lease=15)  # a worker starts it, renews once, dies
    w.clock.advance(5)
    w.store.renew_leases([(a, 1)], lease=15)
    w.clock.advance(14)
    w.loader.load()
    assert w.status(a) is TimerStatus.EXECUTING
    w.clock.advance(2)
    w.loader.load()
    assert w.execution.tick() == 1
    assert w.enqueuer.sent == [(a, 1), (a, 2)]


def test_a_broker_that_cannot_say_whether_its_queue_is_idle_counts_as_busy() -> None:
    w = World()

    def unreachable() -> bool:
        raise ConnectionError("broker down")

    w.recovery.queue_idle = unreachable
    a = w.add()
    w.loader.load()
    w.execution.tick()
    w.clock.advance(60)
    w.loader.load()
    assert w.status(a) is TimerStatus.EXECUTING


def test_misfire_policies() -> None:
    fire = World()
    missed = fire.add(-3600)
    fire.loader.load()
    assert missed in fire.cache  # fired late
    skip = World()
    skip.recovery.misfire_policy = "skip"
    skip.loader.fire_overdue = False
    missed, recent = skip.add(-301), skip.add(-200)
    skip.loader.load()
    assert skip.status(missed) is TimerStatus.FAILED and missed not in skip.cache
    assert (skip.store.get(missed).last_error or "").startswith("missed: due at ")
    assert recent in skip.cache


def test_change_notifications_keep_the_cache_right_between_loads() -> None:
    w = World()
    wake = threading.Event()
    listener = ChangeListener(w.store, w.cache, w.loader, wake)
    feed = w.store.changes()
    feed.open()
    soon, far, gone = w.add(5), w.add(3600), w.add(10)
    w.loader.load()
    w.store.cancel(gone)
    listener.apply(feed.wait(0))
    assert soon in w.cache and far not in w.cache and gone not in w.cache
    assert wake.is_set()
    w.store.update_pending(soon, {"execute_at": w.clock() + timedelta(seconds=7200)})
    listener.apply(feed.wait(0))
    assert soon not in w.cache


def test_notifications_say_enough_to_update_the_cache_without_a_query() -> None:
    w = World()
    listener = ChangeListener(w.store, w.cache, w.loader, threading.Event())
    feed = w.store.changes()
    feed.open()
    w.loader.load()
    soon, gone = w.add(5), w.add(10)
    w.store.cancel(gone)
    w.store.unavailable = True  # a re-read would raise
    listener.apply(feed.wait(0))
    assert soon in w.cache and gone not in w.cache


def test_notifications_without_a_status_are_read_back() -> None:
    w = World()
    listener = ChangeListener(w.store, w.cache, w.loader, threading.Event())
    w.loader.load()
    soon, gone = w.add(5), w.add(10)
    w.store.cancel(gone)
    old_style = [Change(t, w.store.get(t).execute_at) for t in (soon, gone)]
    listener.apply(old_style)
    assert soon in w.cache and gone not in w.cache


def test_a_large_backlog_goes_in_batches_and_a_stop_ends_it_between_batches() -> None:
    w = World(batch_size=5)
    ids = [w.add(-1) for _ in range(20)]
    w.loader.load()
    batches = 0

    def stopping() -> bool:
        nonlocal batches
        batches += 1
        return batches >= 2

    w.execution.stopping = stopping
    assert w.execution.tick() == 10
    claimed = [i for i in ids if w.status(i) is TimerStatus.EXECUTING]
    assert sorted(claimed) == sorted(w.sent()) and len(claimed) == 10
