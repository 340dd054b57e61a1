"""Every scheduler down across 5 slots of a 1-second schedule, then one starts (the scheduler's
own loader and execution loop, on PostgreSQL): `skip` fires none of the missed slots, `latest`
one, `all` each one. The downtime is made by moving the schedule into the past, not by waiting."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from timers.models import Claimed
from timers.scheduler.cache import TimerCache
from timers.scheduler.execution import ExecutionLoop
from timers.scheduler.loader import MemoryLoader
from timers.schedules.keeper import ScheduleKeeper
from timers.schedules.model import ScheduleSpec
from timers.schedules.slots import Timing
from timers.schedules.store import ScheduleStore
from timers.store import TimerStore

HOOK = {"type": "http", "url": "https://receiver.example/hook", "headers": {}, "payload": {}}


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Claimed] = []

    def ready(self) -> bool:
        return True

    def enqueue(self, timers: Sequence[Claimed]) -> list:
        self.sent.extend(timers)
        return []


@pytest.mark.parametrize(("catchup", "fired"), [("skip", 0), ("latest", 1), ("all", 5)])
def test_missed_slots_after_every_scheduler_was_down(
    store: TimerStore, catchup: str, fired: int
) -> None:
    schedules = ScheduleStore(store.engine)
    start = datetime.now(UTC) - timedelta(seconds=6.1)
    s = schedules.create(
        ScheduleSpec(
            timing=Timing(start_at=start, every=1.0),
            callback_type="http",
            callback_config=HOOK,
            catchup=catchup,
            catchup_window=3600 if catchup == "all" else None,
        )
    )
    # As if slot 0 had fired and every scheduler then died: slots 1..5 fall while none runs.
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM timers WHERE schedule_id = :id"), {"id": s.id})
        conn.execute(
            text("UPDATE schedules SET materialized_until = start_at WHERE id = :id"), {"id": s.id}
        )
    keeper = ScheduleKeeper(schedules)
    cache = TimerCache()
    recorder = Recorder()
    loader = MemoryLoader(store, cache, recovery_window=300, lookahead=60, top_up=keeper.sweep)
    loop = ExecutionLoop(store, cache, recorder, after_claim=keeper.after_claim)
    # The first load finds the schedule due for its slots and makes them; the second caches them
    # (a running scheduler hears of them at once, by their notifications).
    loader.load()
    loader.load()
    loop.tick()
    missed = {start + timedelta(seconds=k) for k in range(1, 6)}
    late = [c for c in recorder.sent if c.execute_at in missed or c.schedule_id == s.id]
    with store.engine.connect() as conn:
        slots = {
            row[0]
            for row in conn.execute(
                text("SELECT scheduled_for FROM timers WHERE schedule_id = :id AND attempts > 0"),
                {"id": s.id},
            )
        }
    assert late  # the scheduler claimed occurrences of this schedule
    assert len(slots & missed) == fired
    assert schedules.get(s.id).skipped == 5 - fired
