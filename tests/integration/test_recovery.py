"""Recovery of stranded timers and the misfire policies, against real PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tests.integration.test_scheduler import add_timer
from timers.models import TimerStatus
from timers.scheduler import MemoryLoader, Recovery, TimerCache
from timers.store import TimerStore


def now() -> datetime:
    return datetime.now(UTC)


def recovery(
    store: TimerStore,
    *,
    enqueue: float = 0.3,
    stale: float = 60,
    policy: str = "fire",
    window: float = 300,
) -> Recovery:
    return Recovery(
        store,
        enqueue_timeout=enqueue,
        stale_delivery_after=stale,
        recovery_window=window,
        misfire_policy=policy,
    )


def test_a_claim_never_enqueued_goes_back_to_pending_after_the_enqueue_timeout(
    store: TimerStore,
) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    # A scheduler claims it and dies before enqueueing (nothing else happens to the row).
    assert [t.id for t in store.claim_due([timer.id])] == [timer.id]
    recovery(store, enqueue=30).run()
    assert store.get(timer.id).status is TimerStatus.EXECUTING  # not yet: within the timeout
    time.sleep(0.4)
    recovery(store).run()
    recovered = store.get(timer.id)
    assert recovered.status is TimerStatus.PENDING
    assert recovered.last_error == "recovered: claimed but never picked up by a worker"
    again = store.claim_due([timer.id])
    assert again[0].attempts == 2


def test_a_running_delivery_is_never_recovered(store: TimerStore) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([timer.id])
    assert store.begin_delivery(timer.id, 1, lease=60) is not None
    time.sleep(0.4)
    recovery(store, enqueue=0.1, stale=60).run()
    assert store.get(timer.id).status is TimerStatus.EXECUTING


def test_a_delivery_whose_worker_and_message_are_gone_is_recovered(store: TimerStore) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([timer.id])
    store.begin_delivery(timer.id, 1, lease=60)
    time.sleep(0.4)
    recovery(store, enqueue=0.1, stale=0.2).run()
    recovered = store.get(timer.id)
    assert recovered.status is TimerStatus.PENDING
    assert recovered.last_error == "recovered: delivery started but never finished"


def test_a_late_copy_of_an_old_claims_message_is_ignored(store: TimerStore) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([timer.id])
    time.sleep(0.4)
    recovery(store).run()
    store.claim_due([timer.id])  # attempt 2, enqueued afresh
    assert store.begin_delivery(timer.id, 1, lease=60) is None
    assert store.finish(timer.id, None, attempt=1) is False
    assert store.begin_delivery(timer.id, 2, lease=60) is not None
    assert store.finish(timer.id, None, attempt=2) is True
    assert store.get(timer.id).status is TimerStatus.COMPLETED


def test_a_second_copy_of_a_running_delivery_waits_for_the_lease(store: TimerStore) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([timer.id])
    assert store.begin_delivery(timer.id, 1, lease=0.3) is not None
    assert store.begin_delivery(timer.id, 1, lease=0.3) is None  # someone is delivering it
    time.sleep(0.4)
    assert store.begin_delivery(timer.id, 1, lease=0.3) is not None  # that someone is gone


def test_misfire_policy_skip_fails_timers_overdue_beyond_the_recovery_window(
    store: TimerStore,
) -> None:
    missed = add_timer(store, now() - timedelta(seconds=301))
    recent = add_timer(store, now() - timedelta(seconds=200))
    recovery(store, policy="skip", window=300).run()
    failed = store.get(missed.id)
    assert failed.status is TimerStatus.FAILED
    assert (failed.last_error or "").startswith("missed: due at ")
    assert store.get(recent.id).status is TimerStatus.PENDING


def test_misfire_policy_fire_loads_timers_overdue_beyond_the_recovery_window(
    store: TimerStore,
) -> None:
    missed = add_timer(store, now() - timedelta(hours=2))
    cache = TimerCache()
    MemoryLoader(store, cache, recovery_window=300, lookahead=60, fire_overdue=True).load()
    assert missed.id in cache
    plain = TimerCache()
    MemoryLoader(store, plain, recovery_window=300, lookahead=60).load()
    assert missed.id not in plain


def test_batched_start_and_finish_respect_claims_and_leases(store: TimerStore) -> None:
    fresh, stale, busy, done = (add_timer(store, now() - timedelta(seconds=1)) for _ in range(4))
    store.claim_due([fresh.id, stale.id, busy.id, done.id])
    store.begin_delivery(busy.id, 1, lease=60)  # another worker is on it
    store.begin_delivery(done.id, 1, lease=60)
    store.finish(done.id, None, 1)
    claims = [(fresh.id, 1), (stale.id, 7), (busy.id, 1), (done.id, 1)]
    started = store.begin_deliveries(claims, lease=60)
    assert [t.id for t in started] == [fresh.id]
    outcomes = [(fresh.id, 1, None), (stale.id, 7, "HTTP 500"), (done.id, 1, "HTTP 500")]
    assert store.finish_many(outcomes) == 1
    assert store.get(fresh.id).status is TimerStatus.COMPLETED
    assert store.get(stale.id).status is TimerStatus.EXECUTING
    assert store.get(done.id).status is TimerStatus.COMPLETED  # a late copy changes nothing
    assert store.get(done.id).last_error is None


def test_finish_many_records_each_error(store: TimerStore) -> None:
    a, b = (add_timer(store, now() - timedelta(seconds=1)) for _ in range(2))
    store.claim_due([a.id, b.id])
    store.begin_deliveries([(a.id, 1), (b.id, 1)], lease=60)
    assert store.finish_many([(a.id, 1, "HTTP 503"), (b.id, 1, "timeout after 2s")]) == 2
    assert store.get(a.id).last_error == "HTTP 503"
    assert store.get(b.id).last_error == "timeout after 2s"
    assert store.get(b.id).status is TimerStatus.FAILED
    assert store.get(b.id).executed_at is not None
