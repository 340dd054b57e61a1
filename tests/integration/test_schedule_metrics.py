"""The scheduler's schedule gauges, read from PostgreSQL when scraped: schedules by state and the
slots skipped (by the claim and by the sweeps alike, as counted on each schedule)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest
from sqlalchemy import text

from timers.metrics import SchedulerMetrics
from timers.schedules.model import ScheduleSpec
from timers.schedules.slots import Timing
from timers.schedules.store import ScheduleStore
from timers.store import TimerStore

HOOK = {"type": "http", "url": "https://receiver.example/hook", "headers": {}, "payload": {}}


def spec(**fields: object) -> ScheduleSpec:
    return ScheduleSpec(
        timing=Timing(start_at=datetime.now(UTC), every=60.0),
        callback_type="http",
        callback_config=HOOK,
        **fields,  # type: ignore[arg-type]
    )


def test_schedules_by_state_and_skipped_slots(store: TimerStore) -> None:
    schedules = ScheduleStore(store.engine)
    active = [schedules.create(spec()) for _ in range(2)]
    schedules.create(spec(paused=True))
    ended = schedules.create(spec())
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE schedules SET end_at = :end, skipped = 3 WHERE id = :id"),
            {"end": datetime.now(UTC) - timedelta(seconds=1), "id": ended.id},
        )
        conn.execute(text("UPDATE schedules SET skipped = 4 WHERE id = :id"), {"id": active[0].id})
    metrics = SchedulerMetrics()
    metrics.watch_schedules(schedules.counts)
    exposed = generate_latest(metrics.registry).decode()
    assert 'timers_schedules{state="active"} 2.0' in exposed, exposed
    assert 'timers_schedules{state="paused"} 1.0' in exposed
    assert 'timers_schedules{state="ended"} 1.0' in exposed
    assert "timers_schedule_slots_skipped 7.0" in exposed
