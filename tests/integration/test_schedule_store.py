"""The schedule store on PostgreSQL: occurrences made once per slot whoever makes them, and the
claim skipping late or overlapping occurrences."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from timers.schedules.model import ScheduleSpec
from timers.schedules.slots import Timing
from timers.schedules.store import ScheduleNameTaken, ScheduleStore
from timers.storage import TimerFilter
from timers.store import TimerStore

HOOK = {"type": "http", "url": "https://receiver.example/hook", "headers": {}, "payload": {}}


@pytest.fixture
def schedules(store: TimerStore) -> Iterator[ScheduleStore]:
    yield ScheduleStore(store.engine)


def spec(**kw: object) -> ScheduleSpec:
    timing = Timing(
        start_at=datetime.now(UTC) + timedelta(seconds=30),
        every=kw.pop("every", 60.0),  # type: ignore[arg-type]
    )
    return ScheduleSpec(timing=timing, callback_type="http", callback_config=HOOK, **kw)  # type: ignore[arg-type]


def occurrences(store: TimerStore, schedule_id: uuid.UUID) -> list:
    return store.page(
        where=TimerFilter(schedule_id=schedule_id), limit=200, sort="execute_at", order="asc"
    ).timers


def test_create_makes_the_next_two_slots(store: TimerStore, schedules: ScheduleStore) -> None:
    s = schedules.create(spec())
    made = occurrences(store, s.id)
    start = s.spec.timing.start_at
    assert [t.scheduled_for for t in made] == [start, start + timedelta(seconds=60)]
    assert all(t.status.value == "pending" and t.schedule_id == s.id for t in made)
    assert s.materialized_until == start + timedelta(seconds=60)


def test_a_schedule_starting_now_fires_its_first_slot_now(
    store: TimerStore, schedules: ScheduleStore
) -> None:
    # What the API does without a start_at: its own clock's now, a moment before the database's.
    start = datetime.now(UTC) - timedelta(milliseconds=50)
    s = schedules.create(
        ScheduleSpec(
            timing=Timing(start_at=start, every=60.0), callback_type="http", callback_config=HOOK
        )
    )
    made = occurrences(store, s.id)
    assert [t.scheduled_for for t in made][:2] == [start, start + timedelta(seconds=60)]


def test_every_process_may_top_up_and_each_slot_is_one_timer(
    store: TimerStore, schedules: ScheduleStore
) -> None:
    s = schedules.create(spec())
    other = ScheduleStore(store.engine)
    with store.engine.begin() as conn:  # as if another process had not seen the advance
        conn.execute(text("UPDATE schedules SET materialized_until = start_at - interval '1 s'"))
    other.top_up([s.id])
    schedules.top_up(None, lookahead=3600)
    slots = [t.scheduled_for for t in occurrences(store, s.id)]
    assert len(slots) == len(set(slots)) == 2


def test_a_name_is_unique_per_owner(schedules: ScheduleStore) -> None:
    schedules.create(spec(name="nightly"))
    schedules.create(spec(name="nightly", owner="other"))
    with pytest.raises(ScheduleNameTaken):
        schedules.create(spec(name="nightly"))


def test_the_claim_skips_an_occurrence_later_than_its_limit(
    store: TimerStore, schedules: ScheduleStore
) -> None:
    s = schedules.create(spec())
    first, second = occurrences(store, s.id)
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE timers SET execute_at = now() - interval '2 min' WHERE id = :id"),
            {"id": first.id},
        )
        conn.execute(text("UPDATE timers SET execute_at = now() WHERE id = :id"), {"id": second.id})
    claimed = store.claim_due([first.id, second.id])
    assert [c.id for c in claimed] == [second.id]
    assert claimed[0].schedule_id == s.id
    skipped = store.get(first.id)
    assert skipped.status.value == "canceled"
    assert skipped.last_error and skipped.last_error.startswith("skipped:")
    assert schedules.get(s.id).skipped == 1


def test_overlap_skip_skips_while_another_occurrence_runs(
    store: TimerStore, schedules: ScheduleStore
) -> None:
    s = schedules.create(spec(overlap="skip"))
    first, second = occurrences(store, s.id)
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE timers SET execute_at = now() WHERE schedule_id = :id"), {"id": s.id}
        )
    assert [c.id for c in store.claim_due([first.id])] == [first.id]
    assert store.claim_due([second.id]) == []
    assert store.get(second.id).last_error == "skipped: the previous occurrence is still running"


def test_a_timer_of_no_schedule_is_claimed_as_before(store: TimerStore) -> None:
    from timers.storage import NewTimer

    t = store.create(
        NewTimer(execute_at=datetime.now(UTC), callback_type="http", callback_config=HOOK)
    )
    [claimed] = store.claim_due([t.id])
    assert claimed.id == t.id and claimed.schedule_id is None


def test_replace_pause_resume_delete(store: TimerStore, schedules: ScheduleStore) -> None:
    s = schedules.create(spec())
    changed = schedules.replace(s.id, spec(every=120.0), None)
    assert changed.spec.timing.every == 120.0
    pending = [t for t in occurrences(store, s.id) if t.status.value == "pending"]
    assert len(pending) == 2
    assert pending[1].scheduled_for - pending[0].scheduled_for == timedelta(seconds=120)
    schedules.set_paused(s.id, True, None)
    assert [t for t in occurrences(store, s.id) if t.status.value == "pending"] == []
    schedules.set_paused(s.id, False, None)
    assert len([t for t in occurrences(store, s.id) if t.status.value == "pending"]) == 2
    extra = schedules.trigger(s.id, None)
    assert extra.schedule_id == s.id
    assert schedules.delete(s.id, None) == 3


def test_timers_python_api_makes_gets_and_deletes_a_schedule(store: TimerStore) -> None:
    from timers.config import Settings
    from timers.library import Timers
    from timers.schedules.slots import InvalidSchedule

    lib = Timers(store=store, settings=Settings(database_url="postgresql://unused/x"))
    made = lib.create_schedule("http", HOOK, every=60, name="py")
    assert lib.get_schedule(str(made.id)).spec.name == "py"
    with pytest.raises(InvalidSchedule) as bad:
        lib.create_schedule("http", HOOK, cron="not a cron")
    assert bad.value.field == "cron"
    assert lib.delete_schedule(made.id) == 3  # its first slot (now) and the two after it
