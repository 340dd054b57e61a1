"""The contract suite: one file per role of the store (`timers.storage.roles`), each test run on
PostgreSQL (`TimerStore`) and on its in-memory twin (`InMemoryStore`) alike, so that the decisions
built on a store can be unit-tested on the twin.

Time: PostgreSQL compares against its own `now()` (another host's clock in production), so its
tests really wait; the twin's clock is moved by hand. The twin can't share a clock with other
hosts: a scheduler on the twin reads the same clock as its store, which is what PostgreSQL's
`now()` gives every host in production. A real database restart is staged in the fault suite.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.contract.world import World
from timers.store import TimerStore
from timers.testing import InMemoryStore, ManualClock


@pytest.fixture(params=["postgres", "memory"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    if request.param == "postgres":
        store: TimerStore = request.getfixturevalue("store")
        yield World(store, lambda: datetime.now(UTC), time.sleep, "postgres")
    else:
        clock = ManualClock(datetime.now(UTC))
        yield World(InMemoryStore(clock), clock, clock.advance, "memory")
