"""The scheduler's schedule gauges, read from the store when scraped: schedules by state and the
slots skipped (by the claim and by the sweeps alike, as counted on each schedule); here on the
in-memory store, whose counts are held to PostgreSQL's by tests/contract."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import generate_latest

from timers.metrics import SchedulerMetrics
from timers.schedules.model import ScheduleSpec
from timers.schedules.slots import Timing
from timers.storage import TimerFilter
from timers.testing import InMemoryStore, ManualClock

HOOK = {"type": "http", "url": "https://receiver.example/hook", "headers": {}, "payload": {}}


def test_schedules_by_state_and_skipped_slots() -> None:
    clock = ManualClock()
    store = InMemoryStore(clock)

    def spec(every: float = 60.0, end_in: float | None = None, **fields: object) -> ScheduleSpec:
        end = None if end_in is None else clock() + timedelta(seconds=end_in)
        return ScheduleSpec(
            timing=Timing(start_at=clock() + timedelta(seconds=30), every=every, end_at=end),
            callback_type="http",
            callback_config=HOOK,
            **fields,  # type: ignore[arg-type]
        )

    active = [store.schedules.create(spec(every=3600)) for _ in range(2)]
    store.schedules.create(spec(paused=True))
    store.schedules.create(spec(end_in=60))
    clock.advance(150)  # the last one ends; each active one's first slot is two minutes late
    for schedule in active:
        occurrences = store.page(where=TimerFilter(schedule_id=schedule.id)).timers
        store.claim_due([t.id for t in occurrences])  # skipped: later than their limit
    metrics = SchedulerMetrics()
    metrics.watch_schedules(store.schedules.counts)
    exposed = generate_latest(metrics.registry).decode()
    assert 'timers_schedules{state="active"} 2.0' in exposed, exposed
    assert 'timers_schedules{state="paused"} 1.0' in exposed
    assert 'timers_schedules{state="ended"} 1.0' in exposed
    assert "timers_schedule_slots_skipped 2.0" in exposed
