"""The execution loop's wake-up decision, on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from timers.scheduler.timing import MIN_WAKE_GAP, next_wake

WALL = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def wake(
    now: float,
    earliest_in: float | None,
    *,
    last_tick_ago: float | None = 0.0,
    wake_ups: bool = True,
    start: float = 100.0,
    interval: float = 1.0,
) -> float:
    """Seconds to wait at monotonic `now` (wall clock WALL), with the earliest cached timer due
    `earliest_in` seconds from now and the last tick `last_tick_ago` seconds ago."""
    return next_wake(
        grid_start=start,
        interval=interval,
        now=now,
        wall_now=WALL,
        earliest=None if earliest_in is None else WALL + timedelta(seconds=earliest_in),
        last_tick_at=None if last_tick_ago is None else WALL - timedelta(seconds=last_tick_ago),
        wake_ups=wake_ups,
    )


def test_with_nothing_cached_the_loop_waits_for_the_next_grid_point() -> None:
    assert wake(100.25, None) == pytest.approx(0.75)


def test_a_timer_due_before_the_next_grid_point_wakes_the_loop_at_its_due_time() -> None:
    assert wake(100.25, 0.3) == pytest.approx(0.3)


def test_a_timer_due_after_the_next_grid_point_leaves_the_grid_in_charge() -> None:
    assert wake(100.25, 5.0) == pytest.approx(0.75)


def test_timers_due_within_a_few_milliseconds_are_taken_together() -> None:
    assert wake(100.25, 0.001) == pytest.approx(MIN_WAKE_GAP)


def test_a_timer_that_could_not_be_claimed_at_the_last_tick_is_left_to_the_grid() -> None:
    # Due 2 s ago, the last tick 0.1 s ago saw it and it is still cached (database down).
    assert wake(100.25, -2.0, last_tick_ago=0.1) == pytest.approx(0.75)


def test_before_the_first_tick_an_overdue_timer_wakes_the_loop_at_once() -> None:
    assert wake(100.25, -2.0, last_tick_ago=None) == pytest.approx(MIN_WAKE_GAP)


def test_without_wake_ups_only_the_grid_counts() -> None:
    assert wake(100.25, 0.3, wake_ups=False) == pytest.approx(0.75)


def test_a_tick_that_overran_whole_intervals_skips_the_missed_grid_points() -> None:
    assert wake(103.6, None) == pytest.approx(0.4)
