"""`Housekeeping` on both stores: counts by status, the due backlog, recent lateness, and the
purge of old finished timers."""

from __future__ import annotations

from tests.contract.world import World, finish
from timers.models import TimerStatus


def test_counts_and_the_due_backlog(world: World) -> None:
    due = [world.add(-1) for _ in range(3)]
    world.add(3600)
    world.store.claim_due(due[:1])
    world.store.cancel(due[2])
    counts, estimated = world.store.counts()
    assert not estimated
    assert counts == {"pending": 2, "executing": 1, "completed": 0, "failed": 0, "canceled": 1}
    assert world.store.due_backlog() == 1
    stats = world.store.stats()
    assert (stats.counts, stats.due_backlog) == (counts, 1)


def test_recent_lateness_by_minute(world: World) -> None:
    assert world.store.lateness() == []
    for _ in range(3):
        finish(world, world.add(-2))
    finish(world, world.add(-4), "HTTP 500")
    minutes = world.store.lateness()
    assert sum(m.count for m in minutes) == 4
    for m in minutes:
        assert 1900 <= m.p50_ms <= m.p99_ms <= m.max_ms < 60_000
    assert max(m.max_ms for m in minutes) >= 3900


def test_purge_deletes_only_old_finished_timers_a_batch_at_a_time(world: World) -> None:
    old = [world.add() for _ in range(5)]
    for timer_id in old[:3]:
        finish(world, timer_id)
    finish(world, old[3], "HTTP 500")
    world.store.cancel(world.add(60))
    waiting = world.add(3600)
    running = world.add()
    world.store.claim_due([running])
    world.advance(1.5)
    fresh = world.add()
    finish(world, fresh)
    first = world.store.purge_finished(1.0, limit=3)
    assert first is not None and first.deleted == 3 and first.next is not None
    # The next batch goes on after the last row the first one looked at; finding fewer rows
    # than its limit, it ends the pass.
    assert world.store.purge_finished(1.0, limit=3, at=first.next) == (2, None)
    assert world.store.purge_finished(1.0, limit=3) == (0, None)
    left = {t.id: t.status for t in world.store.page(limit=50).timers}
    assert left == {
        old[4]: TimerStatus.PENDING,
        waiting: TimerStatus.PENDING,
        running: TimerStatus.EXECUTING,
        fresh: TimerStatus.COMPLETED,
    }
    world.advance(0.01)
    assert world.store.purge_finished(0.0, limit=10) == (1, None)  # 0: every finished timer
