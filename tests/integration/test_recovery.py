"""Claims, delivery leases, recovery of stranded timers and the misfire policies, against real
PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import text

from tests.support.timers import add_timer, now
from timers.models import TimerStatus
from timers.scheduler import MemoryLoader, Recovery, TimerCache
from timers.store import LOST_CLAIM, LOST_DELIVERY, RecoveryRules, TimerStore

IDLE = RecoveryRules(enqueue_timeout=0.3, lease=0.3, queue_idle=True)


def recovered_ids(store: TimerStore, rules: RecoveryRules = IDLE) -> set[object]:
    near = store.load_near_term(None, now() + timedelta(seconds=60), recovery=rules)
    assert {r.id for r in near.recovered} <= {t.id for t in near.timers}  # and they are loaded
    return {r.id for r in near.recovered}


def test_a_claim_never_started_goes_back_to_pending_after_the_enqueue_timeout(
    store: TimerStore,
) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    # A scheduler claims it and dies before enqueueing (nothing else happens to the row).
    assert [t.id for t in store.claim_due([timer.id])] == [timer.id]
    assert recovered_ids(store) == set()  # not yet: within the timeout
    time.sleep(0.4)
    assert recovered_ids(store) == {timer.id}
    recovered = store.get(timer.id)
    assert recovered.status is TimerStatus.PENDING
    assert recovered.last_error == LOST_CLAIM
    assert store.claim_due([timer.id])[0].attempts == 2


def test_a_claim_whose_message_waits_in_a_busy_queue_is_left_alone(store: TimerStore) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([timer.id])
    time.sleep(0.4)
    busy = RecoveryRules(enqueue_timeout=0.3, lease=0.3, queue_idle=False)
    assert recovered_ids(store, busy) == set()
    assert store.get(timer.id).status is TimerStatus.EXECUTING


def test_a_delivery_whose_lease_is_renewed_is_never_recovered(store: TimerStore) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([timer.id])
    assert [t.id for t in store.begin_deliveries([(timer.id, 1)], lease=0.5)] == [timer.id]
    for _ in range(4):  # 0.8 s in all: longer than the lease, renewed every 0.2 s
        time.sleep(0.2)
        assert store.renew_leases([(timer.id, 1)], lease=0.5) == 1
        assert recovered_ids(store) == set()
    assert store.get(timer.id).status is TimerStatus.EXECUTING


def test_a_delivery_whose_lease_lapsed_is_recovered(store: TimerStore) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([timer.id])
    store.begin_deliveries([(timer.id, 1)], lease=0.2)
    assert recovered_ids(store) == set()
    time.sleep(0.3)
    assert recovered_ids(store) == {timer.id}
    recovered = store.get(timer.id)
    assert recovered.status is TimerStatus.PENDING
    assert recovered.last_error == LOST_DELIVERY
    assert recovered.started_at is None and recovered.leased_until is None


def test_no_lease_is_taken_over_until_the_database_has_been_up_for_a_lease(
    store: TimerStore,
) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([timer.id])
    store.begin_deliveries([(timer.id, 1)], lease=0.1)
    time.sleep(0.2)
    # As if the database had just restarted: workers get one lease to renew or record first.
    with store.engine.connect() as conn:
        uptime = conn.execute(text("SELECT extract(epoch FROM now() - pg_postmaster_start_time())"))
        up_for = float(uptime.scalar_one())
    just_restarted = RecoveryRules(enqueue_timeout=0.3, lease=up_for + 60, queue_idle=True)
    assert recovered_ids(store, just_restarted) == set()
    assert recovered_ids(store) == {timer.id}


def test_a_started_claim_is_never_started_again(store: TimerStore) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([timer.id])
    assert len(store.begin_deliveries([(timer.id, 1)], lease=0.1)) == 1
    time.sleep(0.2)
    # A redelivered copy of the message, even after the lease lapsed: recovery decides, not it.
    assert store.begin_deliveries([(timer.id, 1)], lease=0.1) == []


def test_a_late_copy_of_an_old_claims_message_is_ignored(store: TimerStore) -> None:
    timer = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([timer.id])
    time.sleep(0.4)
    assert recovered_ids(store) == {timer.id}
    store.claim_due([timer.id])  # attempt 2, enqueued afresh
    assert store.begin_deliveries([(timer.id, 1)], lease=60) == []
    assert store.finish_many([(timer.id, 1, None)]) == 0
    assert len(store.begin_deliveries([(timer.id, 2)], lease=60)) == 1
    assert store.finish_many([(timer.id, 2, None)]) == 1
    assert store.get(timer.id).status is TimerStatus.COMPLETED


def test_release_touches_only_the_same_claim_when_no_worker_started_it(store: TimerStore) -> None:
    unsent, started, reclaimed = (add_timer(store, now() - timedelta(seconds=1)) for _ in range(3))
    store.claim_due([unsent.id, started.id, reclaimed.id])
    store.begin_deliveries([(started.id, 1)], lease=60)  # its message reached a worker after all
    claims = [(unsent.id, 1), (started.id, 1), (reclaimed.id, 0)]  # reclaimed: an older claim
    assert store.release(claims) == 1
    assert store.get(unsent.id).status is TimerStatus.PENDING
    assert store.get(started.id).status is TimerStatus.EXECUTING
    assert store.get(reclaimed.id).status is TimerStatus.EXECUTING


def test_misfire_policy_skip_fails_timers_overdue_beyond_the_recovery_window(
    store: TimerStore,
) -> None:
    missed = add_timer(store, now() - timedelta(seconds=301))
    recent = add_timer(store, now() - timedelta(seconds=200))
    recovery = Recovery(
        enqueue_timeout=15,
        lease=15,
        queue_idle=lambda: True,
        misfire_policy="skip",
        recovery_window=300,
    )
    cache = TimerCache()
    MemoryLoader(store, cache, recovery_window=300, lookahead=60, recovery=recovery).load()
    failed = store.get(missed.id)
    assert failed.status is TimerStatus.FAILED
    assert (failed.last_error or "").startswith("missed: due at ")
    assert store.get(recent.id).status is TimerStatus.PENDING
    assert recent.id in cache and missed.id not in cache


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


def test_the_loader_recovers_and_caches_stranded_timers_in_one_load(store: TimerStore) -> None:
    lost = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([lost.id])
    time.sleep(0.4)
    recovery = Recovery(enqueue_timeout=0.3, lease=0.3, queue_idle=lambda: True)
    cache = TimerCache()
    MemoryLoader(store, cache, recovery_window=300, lookahead=60, recovery=recovery).load()
    assert lost.id in cache
    assert store.get(lost.id).status is TimerStatus.PENDING


def test_a_broker_that_cannot_say_counts_as_busy(store: TimerStore) -> None:
    lost = add_timer(store, now() - timedelta(seconds=1))
    store.claim_due([lost.id])
    time.sleep(0.4)

    def unreachable() -> bool:
        raise ConnectionError("broker down")

    recovery = Recovery(enqueue_timeout=0.3, lease=0.3, queue_idle=unreachable)
    MemoryLoader(store, TimerCache(), recovery_window=300, lookahead=60, recovery=recovery).load()
    assert store.get(lost.id).status is TimerStatus.EXECUTING


def test_batched_start_and_finish_respect_claims(store: TimerStore) -> None:
    fresh, stale, busy, done = (add_timer(store, now() - timedelta(seconds=1)) for _ in range(4))
    store.claim_due([fresh.id, stale.id, busy.id, done.id])
    store.begin_deliveries([(busy.id, 1), (done.id, 1)], lease=60)  # another worker has them
    store.finish_many([(done.id, 1, None)])
    claims = [(fresh.id, 1), (stale.id, 7), (busy.id, 1), (done.id, 1)]
    started = store.begin_deliveries(claims, lease=60)
    assert [t.id for t in started] == [fresh.id]
    assert started[0].leased_until is not None and started[0].started_at is not None
    outcomes = [(fresh.id, 1, None), (stale.id, 7, "HTTP 500"), (done.id, 1, "HTTP 500")]
    assert store.finish_many(outcomes) == 1
    assert store.get(fresh.id).status is TimerStatus.COMPLETED
    assert store.get(fresh.id).leased_until is None
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
