"""`DeliveryStore` on both stores: a claim's delivery starts once under a lease, the lease is
renewed only under its claim, and outcomes (done, failed, retry) are recorded only under it."""

from __future__ import annotations

from datetime import timedelta

from tests.contract.world import World
from timers.models import TimerStatus
from timers.storage import (
    HISTORY_LENGTH,
    MAX_ERROR_LENGTH,
    Outcome,
)


def test_a_claim_is_started_once_and_leased(world: World) -> None:
    a = world.add()
    world.store.claim_due([a])
    [started] = world.store.begin_deliveries([(a, 1)], lease=10)
    assert started.started_at is not None and started.leased_until is not None
    assert started.leased_until - started.started_at == timedelta(seconds=10)
    assert world.store.begin_deliveries([(a, 1)], lease=10) == []  # a redelivered message
    assert world.store.begin_deliveries([(a, 2)], lease=10) == []  # a claim that never was


def test_renewing_extends_only_leases_still_under_claim(world: World) -> None:
    a, b = world.add(), world.add()
    world.store.claim_due([a, b])
    world.store.begin_deliveries([(a, 1), (b, 1)], lease=1)
    world.store.finish_many([Outcome(b, 1, None)])
    world.advance(0.2)
    assert world.store.renew_leases([(a, 1), (b, 1), (a, 7)], lease=5) == 1
    timer = world.store.get(a)
    assert timer.leased_until is not None and timer.started_at is not None
    assert timer.leased_until - timer.started_at >= timedelta(seconds=5.2)


def test_outcomes_are_recorded_only_under_their_claim(world: World) -> None:
    a, b, c = world.add(), world.add(), world.add()
    world.store.claim_due([a, b, c])
    world.store.begin_deliveries([(a, 1), (b, 1), (c, 1)], lease=60)
    long_error = "x" * (MAX_ERROR_LENGTH + 50)
    recorded = world.store.finish_many(
        [Outcome(a, 1, None), Outcome(b, 1, long_error), Outcome(c, 9, "HTTP 500")]
    )
    assert recorded == 2
    done, failed = world.store.get(a), world.store.get(b)
    assert done.status is TimerStatus.COMPLETED and done.last_error is None
    assert done.executed_at is not None and done.leased_until is None
    assert failed.status is TimerStatus.FAILED
    assert failed.last_error is not None and len(failed.last_error) == MAX_ERROR_LENGTH
    assert world.status(c) is TimerStatus.EXECUTING
    assert world.store.finish_many([Outcome(a, 1, "HTTP 500")]) == 0  # a late copy changes nothing
    assert world.store.get(a).status is TimerStatus.COMPLETED


def test_a_retry_goes_back_to_pending_at_its_time_and_the_history_stays_bounded(
    world: World,
) -> None:
    a = world.add()
    for n in range(1, HISTORY_LENGTH + 3):
        [claimed] = world.store.claim_due([a])
        world.store.begin_deliveries([(a, claimed.claim)], lease=60)
        entry = {"attempt": n, "outcome": "retrying", "error": "HTTP 503", "status": 503}
        before = world.now()
        assert world.store.finish_many([Outcome(a, claimed.claim, "HTTP 503", 0.0, entry)]) == 1
        timer = world.store.get(a)
        assert timer.status is TimerStatus.PENDING and timer.last_error == "HTTP 503"
        assert timer.started_at is None and timer.claimed_at is None
        assert timer.execute_at >= before - timedelta(seconds=1)
    assert timer.delivery_attempts == HISTORY_LENGTH + 2
    assert [e["attempt"] for e in timer.history] == list(range(3, HISTORY_LENGTH + 3))
    [claimed] = world.store.claim_due([a])
    world.store.begin_deliveries([(a, claimed.claim)], lease=60)
    later = Outcome(a, claimed.claim, "HTTP 503", 3600.0, {"attempt": 99})
    world.store.finish_many([later])
    waiting = world.store.get(a)
    assert waiting.execute_at >= world.now() + timedelta(seconds=3590)
    assert world.store.claim_due([a]) == []  # not due before its time
    world.store.cancel(a)  # a retry that waits can be canceled
    assert world.status(a) is TimerStatus.CANCELED
