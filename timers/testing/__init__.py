"""In-memory twins of the scheduler's outside world, for tests that must run in milliseconds:
`InMemoryStore` (the `Store` protocol on dicts, with a clock you can move; its schedules too) and
`RecordingEnqueuer` (an `Enqueuer` that keeps its messages and can be told the broker is down).

They behave as PostgreSQL and the Celery broker do for everything the scheduler and the workers
rely on: tests/contract runs the same suite against each twin and its real counterpart. Where a
twin can't follow (PostgreSQL's `now()` is another host's clock; a database restart), the suite
says so. The store's twin is split as the PostgreSQL store is, one module per role, and holds only
what is storage: the rules above it (`timers.storage`) are shared.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from timers.testing.clock import ManualClock, utc_now
from timers.testing.delivery import InMemoryDelivery
from timers.testing.enqueuer import RecordingEnqueuer
from timers.testing.feed import InMemoryFeed
from timers.testing.housekeeping import InMemoryHousekeeping
from timers.testing.listing import InMemoryListing
from timers.testing.repository import InMemoryRepository
from timers.testing.schedules import InMemorySchedules
from timers.testing.scheduling import InMemoryScheduling
from timers.testing.table import contains

__all__ = [
    "InMemoryFeed",
    "InMemorySchedules",
    "InMemoryStore",
    "ManualClock",
    "RecordingEnqueuer",
    "contains",
]


class InMemoryStore(
    InMemoryRepository,
    InMemoryListing,
    InMemoryScheduling,
    InMemoryDelivery,
    InMemoryHousekeeping,
):
    """The `Store` protocol on a dict of timers, one lock around every operation (each is atomic,
    as each PostgreSQL statement is), and its `schedules` on the same table. Set `unavailable` to
    make every call raise StoreUnavailable, as an unreachable database does."""

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        super().__init__(clock)
        self.schedules = InMemorySchedules(self)
