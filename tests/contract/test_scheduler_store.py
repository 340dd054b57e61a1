"""`SchedulerStore` on both stores: claims, releases, the near-term load with recovery, the `skip`
misfire policy, and change notifications."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from sqlalchemy import text

from tests.contract.world import World
from timers.models import Claimed, DueTime, TimerStatus
from timers.storage import (
    LOST_CLAIM,
    LOST_DELIVERY,
    Outcome,
    RecoveryRules,
)
from timers.store import TimerStore
from timers.testing import InMemoryStore

# -- claims ---------------------------------------------------------------------------------------


def test_a_claim_takes_only_pending_timers_due_by_the_stores_clock(world: World) -> None:
    due, future, canceled = world.add(-1), world.add(30), world.add(-1)
    world.store.cancel(canceled)
    claimed = world.store.claim_due([due, future, canceled, uuid.uuid4()])
    timer = world.store.get(due)
    assert claimed == [Claimed(due, 1, timer.execute_at)]  # what the scheduler enqueues, no more
    assert timer.status is TimerStatus.EXECUTING and timer.claims == 1
    assert timer.claimed_at is not None and timer.started_at is None
    assert world.store.claim_due([due]) == []  # a second claim never wins


def test_release_undoes_only_the_same_claim_that_no_worker_started(world: World) -> None:
    unsent, started, other = world.add(), world.add(), world.add()
    world.store.claim_due([unsent, started, other])
    world.store.begin_deliveries([(started, 1)], lease=60)
    assert world.store.release([(unsent, 1), (started, 1), (other, 0)]) == 1
    assert world.status(unsent) is TimerStatus.PENDING
    assert world.status(started) is TimerStatus.EXECUTING
    assert world.status(other) is TimerStatus.EXECUTING
    assert world.store.claim_due([unsent])[0].claim == 2


def test_pending_by_ids_and_fail_missed(world: World) -> None:
    old, recent, done = world.add(-301), world.add(-200), world.add(-1)
    world.store.claim_due([done])
    pending = world.store.pending_by_ids([old, recent, done])
    assert sorted(pending) == sorted(
        DueTime(i, world.store.get(i).execute_at) for i in (old, recent)
    )
    assert world.store.fail_missed(300) == 1
    missed = world.store.get(old)
    assert missed.status is TimerStatus.FAILED
    due = missed.execute_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    assert missed.last_error == (
        f"missed: due at {due}Z, more than 300s before a scheduler could fire it"
    )


# -- loading and recovery -------------------------------------------------------------------------


IDLE = RecoveryRules(enqueue_timeout=0.3, lease=0.3, queue_idle=True)
BUSY = RecoveryRules(enqueue_timeout=0.3, lease=0.3, queue_idle=False)


def recovered(world: World, rules: RecoveryRules = IDLE) -> set[uuid.UUID]:
    near = world.store.load_near_term(None, world.now() + timedelta(seconds=60), recovery=rules)
    ids = {r.id for r in near.recovered}
    assert ids <= {t.id for t in near.timers}, "recovered timers are loaded too"
    return ids


def test_the_near_term_load_is_the_window_earliest_first(world: World) -> None:
    now = world.now()
    inside = [world.add(s) for s in (50, -100, 10)]
    outside = [world.add(s) for s in (61, -301)]
    near = world.store.load_near_term(now - timedelta(seconds=300), now + timedelta(seconds=60))
    assert [t.id for t in near.timers] == [inside[1], inside[2], inside[0]]
    assert near.recovered == []
    unbounded = world.store.load_near_term(None, now + timedelta(seconds=60), limit=2)
    assert [t.id for t in unbounded.timers] == [outside[1], inside[1]]


def test_a_claim_never_started_is_recovered_after_the_enqueue_timeout_when_the_queue_is_idle(
    world: World,
) -> None:
    a = world.add()
    world.store.claim_due([a])
    assert recovered(world) == set()
    world.advance(0.4)
    assert recovered(world, BUSY) == set()  # its message may be waiting in a long queue
    assert recovered(world) == {a}
    timer = world.store.get(a)
    assert timer.status is TimerStatus.PENDING and timer.last_error == LOST_CLAIM
    assert world.store.claim_due([a])[0].claim == 2


def test_a_delivery_is_recovered_only_once_its_lease_lapsed(world: World) -> None:
    renewed, lapsed = world.add(), world.add()
    world.store.claim_due([renewed, lapsed])
    world.store.begin_deliveries([(renewed, 1), (lapsed, 1)], lease=0.5)
    for _ in range(3):
        world.advance(0.25)
        world.store.renew_leases([(renewed, 1)], lease=0.5)
    assert recovered(world) == {lapsed}
    timer = world.store.get(lapsed)
    assert timer.last_error == LOST_DELIVERY
    assert timer.started_at is None and timer.leased_until is None
    assert world.status(renewed) is TimerStatus.EXECUTING


def test_a_late_copy_of_an_old_claims_message_is_ignored(world: World) -> None:
    a = world.add()
    world.store.claim_due([a])
    world.advance(0.4)
    assert recovered(world) == {a}
    world.store.claim_due([a])
    assert world.store.begin_deliveries([(a, 1)], lease=60) == []
    assert world.store.finish_many([Outcome(a, 1, None)]) == 0
    assert len(world.store.begin_deliveries([(a, 2)], lease=60)) == 1
    assert world.store.finish_many([Outcome(a, 2, None)]) == 1


def test_no_lease_is_taken_over_until_the_database_has_been_up_for_a_lease(world: World) -> None:
    a = world.add()
    world.store.claim_due([a])
    world.store.begin_deliveries([(a, 1)], lease=0.1)
    world.advance(0.2)
    # Recovery with a lease longer than the database's uptime: as if it had just restarted,
    # the workers get a whole lease to renew or record before anything is taken over.
    just_restarted = RecoveryRules(enqueue_timeout=0.3, lease=uptime(world) + 60, queue_idle=True)
    assert recovered(world, just_restarted) == set()
    assert recovered(world) == {a}


def uptime(world: World) -> float:
    if isinstance(world.store, InMemoryStore):
        return (world.now() - world.store.started_at).total_seconds()
    assert isinstance(world.store, TimerStore)
    with world.store.engine.connect() as conn:
        query = text("SELECT extract(epoch FROM now() - pg_postmaster_start_time())")
        return float(conn.execute(query).scalar_one())


# -- change notifications -------------------------------------------------------------------------


def test_the_feed_names_timers_that_became_pending_changed_or_were_canceled(world: World) -> None:
    feed = world.store.changes()
    feed.open()
    try:
        a, b = world.add(5), world.add(-1)
        world.store.cancel(a)
        world.store.claim_due([b])  # claims are not notified
        world.store.release([(b, 1)])
        seen: list[uuid.UUID] = []
        deadline = time.monotonic() + 5
        while len(seen) < 4 and time.monotonic() < deadline:
            seen += [c.timer_id for c in feed.wait(0.2)]
        assert seen == [a, b, a, b]
    finally:
        feed.close()
