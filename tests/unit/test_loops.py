"""Loop timing and the pure decisions of the scheduler, with an injected clock (no sleeping)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

from timers.models import Timer, TimerStatus
from timers.scheduler import TimerCache, near_term_window, next_deadline, run_every

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def make_timer(offset: float) -> Timer:
    return Timer(
        id=uuid.uuid4(),
        execute_at=T0 + timedelta(seconds=offset),
        callback_type="http",
        callback_config={"type": "http", "url": "http://127.0.0.1:9/"},
        status=TimerStatus.PENDING,
        created_at=T0,
        updated_at=T0,
    )


class FakeTime:
    """A monotonic clock that only moves when the loop waits or its action 'works'."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.calls: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def waiter(self, stop_after: int):  # type: ignore[no-untyped-def]
        def wait(seconds: float) -> bool:
            assert seconds >= 0
            self.now += seconds
            return len(self.calls) >= stop_after

        return wait


def run_with_fake_clock(interval: float, work: list[float], ticks: int) -> list[float]:
    """Run `run_every` where the k-th action takes work[k % len(work)] seconds; return tick times."""
    fake = FakeTime()
    start = fake.now

    def action() -> None:
        fake.calls.append(fake.now - start)
        fake.now += work[(len(fake.calls) - 1) % len(work)]

    run_every(
        interval, action, threading.Event(), monotonic=fake.monotonic, wait=fake.waiter(ticks)
    )
    return fake.calls


def test_memory_loader_runs_every_30_seconds_exactly() -> None:
    # Each load takes 4.2 s; the next one still starts 30 s after the previous start.
    assert run_with_fake_clock(30, [4.2], 5) == [0, 30, 60, 90, 120]


def test_execution_task_runs_every_1_second_exactly() -> None:
    ticks = run_with_fake_clock(1, [0.3, 0.05, 0.9], 7)
    assert ticks == [0, 1, 2, 3, 4, 5, 6]


def test_execution_loop_does_not_drift_over_many_ticks() -> None:
    ticks = run_with_fake_clock(0.1, [0.037], 1000)
    assert abs(ticks[-1] - 99.9) < 1e-6


def test_an_overrunning_tick_skips_missed_ticks_instead_of_bursting() -> None:
    # The second action takes 2.5 intervals: the grid points 2 and 3 are skipped, 4 is kept.
    assert run_with_fake_clock(1, [0.1, 2.5, 0.1, 0.1], 4) == [0, 1, 4, 5]


def test_next_deadline_is_on_the_grid() -> None:
    assert next_deadline(10.0, 1.0, 10.0) == 11.0
    assert next_deadline(10.0, 1.0, 10.999) == 11.0
    assert next_deadline(10.0, 1.0, 11.0) == 12.0
    assert next_deadline(10.0, 30.0, 75.0) == 100.0


def test_run_every_stops_when_stop_is_set() -> None:
    stop = threading.Event()
    calls = []

    def action() -> None:
        calls.append(1)
        stop.set()

    run_every(0.01, action, stop)
    assert calls == [1]


def test_memory_loader_window_is_recovery_window_back_and_lookahead_ahead() -> None:
    start, end = near_term_window(T0, recovery_window=300, lookahead=60)
    assert start == T0 - timedelta(minutes=5)
    assert end == T0 + timedelta(minutes=1)


def test_execution_task_only_processes_timers_whose_execute_at_is_not_after_now() -> None:
    early, exact, late = make_timer(-5), make_timer(0), make_timer(0.001)
    cache = TimerCache()
    cache.replace([late, exact, early])
    assert cache.due(T0) == [early, exact]
    assert cache.due(T0) == [early, exact]  # reading what is due leaves it cached
    assert cache.earliest() == early.execute_at


def test_cache_replace_swaps_the_whole_content() -> None:
    cache = TimerCache()
    old = make_timer(1)
    cache.replace([old])
    new = [make_timer(2), make_timer(3)]
    cache.replace(new)
    assert old.id not in cache
    assert len(cache) == 2


def test_cache_due_and_remove() -> None:
    cache = TimerCache()
    due, later = make_timer(-1), make_timer(10)
    cache.replace([due, later])
    assert cache.due(T0) == [due]
    cache.remove([due.id])
    assert due.id not in cache and later.id in cache


def test_cache_follows_moved_and_removed_timers() -> None:
    cache = TimerCache()
    a, b = make_timer(-2), make_timer(-1)
    cache.replace([a, b])
    moved = Timer(**{**a.__dict__, "execute_at": T0 + timedelta(seconds=30)})
    cache.upsert([moved])
    assert cache.due(T0) == [b]
    cache.remove([b.id])
    assert cache.due(T0) == []
    assert cache.earliest() == moved.execute_at
    assert cache.due(T0 + timedelta(seconds=30)) == [moved]


def test_a_snapshot_does_not_undo_newer_changes() -> None:
    cache = TimerCache()
    old = make_timer(5)
    cache.begin_snapshot()
    added = make_timer(1)
    cache.upsert([added])  # arrives (by notification) while the snapshot is being read
    cache.remove([old.id])
    cache.replace([old])  # the snapshot, read before those changes
    assert added.id in cache and old.id not in cache
