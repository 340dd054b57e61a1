"""The scheduler's pure time decisions: the loader's window, the fixed-rate grid, and when the
execution loop wakes next. No clock is read here: callers pass `now` in."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

Clock = Callable[[], datetime]

# Timers coming due within this much of each other are claimed together: a few milliseconds of
# lateness buys one statement and one message for many timers under load.
MIN_WAKE_GAP = 0.01


# -- pure decisions ----------------------------------------------------------------------------


def near_term_window(
    now: datetime, recovery_window: float, lookahead: float
) -> tuple[datetime, datetime]:
    """The `execute_at` range the loader keeps in memory: [now - recovery_window, now + lookahead]."""
    return now - timedelta(seconds=recovery_window), now + timedelta(seconds=lookahead)


def next_deadline(start: float, interval: float, now: float) -> float:
    """The first point of the grid start + k*interval strictly after `now`.

    Ticks stay on the grid however long each one takes (no drift); a tick that overran whole
    intervals skips the grid points it missed instead of firing a burst.
    """
    return start + (math.floor((now - start) / interval) + 1) * interval


def next_wake(
    *,
    grid_start: float,
    interval: float,
    now: float,
    wall_now: datetime,
    earliest: datetime | None,
    last_tick_at: datetime | None,
    wake_ups: bool,
) -> float:
    """Seconds until the execution loop should tick again.

    The next point of its fixed grid (`grid_start` + k*`interval` on the monotonic clock, `now`);
    with `wake_ups`, sooner when the earliest cached timer comes due first, but at least
    MIN_WAKE_GAP after now, so timers due within a few milliseconds are taken together. A timer
    that was due at the last tick and is still cached could not be claimed (the database or the
    broker is down): it is left to the grid instead of spinning on it.
    """
    wait = next_deadline(grid_start, interval, now) - now
    if wake_ups and earliest is not None and (last_tick_at is None or earliest > last_tick_at):
        until_due = (earliest - wall_now).total_seconds()
        wait = min(wait, max(MIN_WAKE_GAP, until_due))
    return max(0.0, wait)


def run_every(
    interval: float,
    action: Callable[[], Any],
    stop: threading.Event,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    wait: Callable[[float], bool] | None = None,
) -> None:
    """Call `action` now and then at start + k*interval until `stop` is set.

    `action` must not raise (each loop catches its own errors). `wait(seconds)` returns True when it
    was interrupted by a stop; tests pass a fake one together with a fake `monotonic`.
    """
    wait = wait or stop.wait
    start = monotonic()
    while not stop.is_set():
        action()
        if wait(max(0.0, next_deadline(start, interval, monotonic()) - monotonic())):
            return
