"""The world every contract test runs in: a store (PostgreSQL or its twin) with its clock. The
`world` fixture (conftest.py) gives each test both, so each role's suite runs on both stores."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from timers.models import TimerStatus
from timers.storage import NewTimer, Outcome, Store


@dataclass
class World:
    store: Store
    now: Callable[[], datetime]
    advance: Callable[[float], None]
    kind: str

    def add(self, in_seconds: float = -1.0, **payload: object) -> uuid.UUID:
        at = self.now() + timedelta(seconds=in_seconds)
        config = {"type": "http", "url": "http://127.0.0.1:9/hook", "payload": payload}
        return self.store.create(NewTimer(at, "http", config)).id

    def status(self, timer_id: uuid.UUID) -> TimerStatus:
        return self.store.get(timer_id).status


def finish(world: World, timer_id: uuid.UUID, error: str | None = None) -> None:
    """Claim, start and record one delivery of this timer (error None: completed)."""
    [claimed] = world.store.claim_due([timer_id])
    world.store.begin_deliveries([(timer_id, claimed.claim)], lease=60)
    assert world.store.finish_many([Outcome(timer_id, claimed.claim, error)]) == 1
