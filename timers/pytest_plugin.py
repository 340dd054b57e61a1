"""The pytest plugin of `celery-timers` (entry point `pytest11`, so installing the package is
enough): test code that schedules timers without PostgreSQL, a broker or waiting.

    def test_an_unpaid_order_expires_after_24_hours(memory_timers):
        order = place_order(memory_timers)        # schedules expire_order.s(order.id), 24 h ahead
        memory_timers.advance(timedelta(hours=24))
        assert order.reload().status == "expired"

Fixtures:
- `memory_timers`: a `timers.memory.MemoryTimers` (the `timers.Timers` API, in memory) on
  `timers_clock`, running due `celery` callbacks on `timers_celery_app`;
- `timers_clock`: the hand-moved clock (`timers.testing.ManualClock`), starting at the real now;
- `timers_celery_app`: None; override it in your conftest.py to return your Celery app, so that
  fired tasks run (eagerly, in the test's process) instead of only being recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported by the fixtures only: loading the plugin stays cheap
    from timers.memory import MemoryTimers
    from timers.testing import ManualClock


@pytest.fixture
def timers_clock() -> ManualClock:
    """The clock of `memory_timers`: it starts at the real now and moves only when told to."""
    from timers.testing import ManualClock

    return ManualClock(datetime.now(UTC))


@pytest.fixture
def timers_celery_app() -> Any:
    """The Celery app whose tasks fired timers run; override it to return yours."""
    return None


@pytest.fixture
def memory_timers(timers_clock: ManualClock, timers_celery_app: Any) -> MemoryTimers:
    """The `timers.Timers` API in memory; `advance(timedelta)` fires what comes due."""
    from timers.memory import MemoryTimers

    return MemoryTimers(clock=timers_clock, celery_app=timers_celery_app)
