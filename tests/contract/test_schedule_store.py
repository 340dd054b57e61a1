"""`ScheduleStore` (a store's `schedules`) on both stores: schedules made, read, paged, changed,
paused, deleted and triggered; their next slots made once each whoever makes them; and what the
claim decides about their occurrences (`SchedulerStore.claim_due`).

Time: a schedule whose slots fell while no scheduler ran is staged by `elapse`, which moves the
twin's clock and, on PostgreSQL, moves the schedule and its occurrences into the past (its `now()`
can't be moved); the schedules here count `every` seconds without jitter, so both read the same.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.contract.world import World
from timers.models import Claims, Timer, TimerStatus
from timers.schedules.model import Schedule, ScheduleSpec
from timers.schedules.slots import Timing
from timers.storage import (
    NewTimer,
    Outcome,
    ScheduleCounts,
    ScheduleNameTaken,
    ScheduleNotFound,
    TimerFilter,
)
from timers.store import TimerStore
from timers.testing import InMemoryStore

HOOK = {"type": "http", "url": "https://receiver.example/hook", "headers": {}, "payload": {}}
MINUTE = timedelta(seconds=60)


def spec(world: World, start_in: float = 30.0, every: float = 60.0, **fields: Any) -> ScheduleSpec:
    """A schedule every `every` seconds from `start_in` seconds from now."""
    end_in = fields.pop("end_in", None)
    start = world.now() + timedelta(seconds=start_in)
    end = None if end_in is None else world.now() + timedelta(seconds=end_in)
    timing = Timing(start_at=start, every=every, end_at=end)
    return ScheduleSpec(timing=timing, callback_type="http", callback_config=HOOK, **fields)


def made(world: World, schedule_id: uuid.UUID, status: TimerStatus | None = None) -> list[Timer]:
    """The schedule's occurrences (with this status), in slot order."""
    where = TimerFilter(schedule_id=schedule_id, status=status)
    page = world.store.page(where=where, limit=200, sort="execute_at", order="asc")
    return sorted(page.timers, key=lambda t: t.scheduled_for or t.execute_at)


def slots(world: World, schedule_id: uuid.UUID, status: TimerStatus | None = None) -> list[Any]:
    return [t.scheduled_for for t in made(world, schedule_id, status)]


def elapse(world: World, schedule_id: uuid.UUID, seconds: float) -> None:
    """As if `seconds` had passed for this schedule while no scheduler ran."""
    if isinstance(world.store, InMemoryStore):
        world.advance(seconds)
        return
    assert isinstance(world.store, TimerStore)
    back = "- make_interval(secs => :s)"
    with world.store.engine.begin() as conn:
        conn.execute(
            text(
                f"UPDATE schedules SET start_at = start_at {back}, end_at = end_at {back},"
                f" materialized_until = materialized_until {back} WHERE id = :id"
            ),
            {"id": schedule_id, "s": seconds},
        )
        conn.execute(
            text(
                f"UPDATE timers SET execute_at = execute_at {back},"
                f" scheduled_for = scheduled_for {back} WHERE schedule_id = :id"
            ),
            {"id": schedule_id, "s": seconds},
        )


def forget_made(world: World, schedule: Schedule) -> None:
    """As another process sees the schedule before the first top-up commits: its slots not made
    yet (`materialized_until` back before its start), though their occurrences exist."""
    before = schedule.spec.timing.start_at - timedelta(seconds=1)
    if isinstance(world.store, InMemoryStore):
        world.store._schedules[schedule.id]["materialized_until"] = before
        return
    assert isinstance(world.store, TimerStore)
    with world.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE schedules SET materialized_until = :at WHERE id = :id"),
            {"at": before, "id": schedule.id},
        )


# -- made, read and paged -------------------------------------------------------------------------


def test_create_makes_the_next_two_slots(world: World) -> None:
    s = world.store.schedules.create(spec(world))
    start = s.spec.timing.start_at
    occurrences = made(world, s.id)
    assert [t.scheduled_for for t in occurrences] == [start, start + MINUTE]
    assert all(t.status is TimerStatus.PENDING for t in occurrences)
    assert all(t.execute_at == t.scheduled_for and t.callback_config == HOOK for t in occurrences)
    assert s.materialized_until == start + MINUTE and s.skipped == 0
    assert world.store.schedules.get(s.id) == s


def test_a_schedule_starting_now_fires_its_first_slot_now(world: World) -> None:
    # What the API does without a start_at: its own clock's now, a moment before the store's.
    s = world.store.schedules.create(spec(world, start_in=-0.05))
    start = s.spec.timing.start_at
    assert slots(world, s.id) == [start, start + MINUTE, start + 2 * MINUTE]
    first = made(world, s.id)[0]
    assert [c.id for c in world.store.claim_due([t.id for t in made(world, s.id)])] == [first.id]


def test_a_paused_schedule_makes_nothing_until_resumed(world: World) -> None:
    s = world.store.schedules.create(spec(world, paused=True))
    assert made(world, s.id) == []
    resumed = world.store.schedules.set_paused(s.id, False, None)
    assert not resumed.spec.paused
    assert slots(world, s.id) == [s.spec.timing.start_at, s.spec.timing.start_at + MINUTE]


def test_a_name_is_unique_per_owner(world: World) -> None:
    schedules = world.store.schedules
    schedules.create(spec(world, name="nightly"))
    schedules.create(spec(world, name="nightly", owner="other"))
    with pytest.raises(ScheduleNameTaken):
        schedules.create(spec(world, name="nightly"))
    renamed = schedules.create(spec(world, name="hourly"))
    with pytest.raises(ScheduleNameTaken):
        schedules.replace(renamed.id, spec(world, name="nightly"), None)
    assert schedules.get(renamed.id).spec.name == "hourly"
    assert len(made(world, renamed.id, TimerStatus.PENDING)) == 2  # nothing changed
    assert sorted(s.spec.name or "" for s in schedules.page(None)[0]) == [
        "hourly",
        "nightly",
        "nightly",
    ]


def test_a_schedule_is_its_owners_and_pages_follow_creation(world: World) -> None:
    schedules = world.store.schedules
    mine = [schedules.create(spec(world, name=f"s{n}")) for n in range(3)]
    theirs = schedules.create(spec(world, owner="other"))
    with pytest.raises(ScheduleNotFound):
        schedules.get(theirs.id, "default")
    with pytest.raises(ScheduleNotFound):
        schedules.delete(mine[0].id, "other")
    assert schedules.get(theirs.id, "other") == schedules.get(theirs.id)
    first, cursor = schedules.page("default", limit=2)
    assert [s.id for s in first] == [s.id for s in mine[:2]] and cursor == mine[1].id
    rest, end = schedules.page("default", limit=2, after=cursor)
    assert [s.id for s in rest] == [mine[2].id] and end is None
    assert [s.id for s in schedules.page("default", limit=1, offset=1)[0]] == [mine[1].id]
    assert [s.id for s in schedules.page(None, name="s2")[0]] == [mine[2].id]
    assert len(schedules.page(None)[0]) == 4


# -- changed --------------------------------------------------------------------------------------


def test_replace_makes_the_slots_after_now_again_and_lets_one_executing_go_on(world: World) -> None:
    schedules = world.store.schedules
    s = schedules.create(spec(world, start_in=-0.05))
    first = made(world, s.id)[0]
    assert [c.id for c in world.store.claim_due([first.id])] == [first.id]
    start = s.spec.timing.start_at
    changed = schedules.replace(
        s.id, replace(s.spec, timing=replace(s.spec.timing, every=120)), None
    )
    assert changed.spec.timing.every == 120 and changed.spec.owner == s.spec.owner
    assert slots(world, s.id, TimerStatus.PENDING) == [start + 2 * MINUTE, start + 4 * MINUTE]
    assert [t.id for t in made(world, s.id, TimerStatus.EXECUTING)] == [first.id]
    with pytest.raises(ScheduleNotFound):
        schedules.replace(s.id, s.spec, "other")


def test_pause_deletes_its_pending_occurrences_and_resume_makes_the_next_ones(
    world: World,
) -> None:
    schedules = world.store.schedules
    s = schedules.create(spec(world))
    paused = schedules.set_paused(s.id, True, None)
    assert paused.spec.paused and made(world, s.id) == []
    assert schedules.set_paused(s.id, True, None) == paused  # so already: nothing changes
    resumed = schedules.set_paused(s.id, False, None)
    assert not resumed.spec.paused
    assert slots(world, s.id) == [s.spec.timing.start_at, s.spec.timing.start_at + MINUTE]


def test_delete_cancels_its_pending_occurrences_and_keeps_its_history(world: World) -> None:
    schedules = world.store.schedules
    s = schedules.create(spec(world, start_in=-0.05))
    first = made(world, s.id)[0]
    world.store.claim_due([first.id])
    assert schedules.delete(s.id, None) == 2
    with pytest.raises(ScheduleNotFound):
        schedules.get(s.id)
    assert [t.status for t in made(world, s.id)] == [
        TimerStatus.EXECUTING,
        TimerStatus.CANCELED,
        TimerStatus.CANCELED,
    ]
    with pytest.raises(ScheduleNotFound):
        schedules.delete(s.id, None)


def test_trigger_makes_one_extra_occurrence_due_now(world: World) -> None:
    schedules = world.store.schedules
    s = schedules.create(spec(world))
    extra = schedules.trigger(s.id, None)
    assert extra.schedule_id == s.id and extra.status is TimerStatus.PENDING
    assert extra.scheduled_for == extra.execute_at <= world.now() + timedelta(seconds=1)
    [claimed] = world.store.claim_due([extra.id])
    assert claimed.schedule_id == s.id
    latest = schedules.occurrences(s.id, limit=2)
    assert [t.scheduled_for for t in latest] == [
        s.spec.timing.start_at + MINUTE,
        s.spec.timing.start_at,
    ]
    assert len(schedules.occurrences(s.id)) == 3
    with pytest.raises(ScheduleNotFound):
        schedules.trigger(s.id, "other")


# -- the scheduler's: next slots, counts, loads -----------------------------------------------


def test_a_top_up_makes_the_next_slots_of_live_schedules(world: World) -> None:
    schedules = world.store.schedules
    s = schedules.create(spec(world))
    paused = schedules.create(spec(world, paused=True))
    elapse(world, s.id, 61)  # its first slot fired: one slot ahead left
    done = schedules.top_up([s.id, paused.id])
    assert (done.made, done.skipped, done.schedules) == (1, 0, 1)
    assert len(slots(world, s.id)) == 3
    assert schedules.get(s.id).materialized_until - schedules.get(s.id).spec.timing.start_at == (
        2 * MINUTE
    )
    assert schedules.top_up(None, lookahead=10).schedules == 0  # its next slot is 89 s away
    assert schedules.top_up(None, lookahead=3600).made == 0  # two slots ahead: none to make


def test_one_top_up_makes_the_slots_of_many_schedules_each_with_its_own_fields(
    world: World,
) -> None:
    schedules = world.store.schedules
    kinds: list[dict[str, Any]] = [
        {},
        {"overlap": "skip", "metadata": {"n": 1}},
        {"catchup": "all", "catchup_window": 30.0, "retry": {"max_attempts": 2}},
        {"catchup": "latest", "jitter": 5.0},
    ]
    made_for = []
    for n in range(12):
        made_for.append(schedules.create(spec(world, name=f"s{n}", **kinds[n % len(kinds)])))
    if isinstance(world.store, InMemoryStore):
        world.advance(61)  # every first slot fired: one slot ahead left
    else:
        for s in made_for:
            elapse(world, s.id, 61)
    done = schedules.top_up([s.id for s in made_for])
    assert (done.made, done.skipped, done.schedules) == (12, 0, 12)
    for s in made_for:
        found = made(world, s.id)
        assert len(found) == 3, s.spec
        assert [t.metadata for t in found] == [s.spec.metadata] * 3
        assert [t.retry for t in found] == [s.spec.retry] * 3
        assert found[-1].scheduled_for == schedules.get(s.id).materialized_until
        assert found[-1].callback_config == HOOK


def test_each_slot_is_one_timer_whoever_makes_it(world: World) -> None:
    schedules = world.store.schedules
    s = schedules.create(spec(world))
    forget_made(world, s)
    again = schedules.top_up([s.id])
    assert again.made == 2  # planned again, inserted once
    schedules.top_up(None, lookahead=3600)
    found = slots(world, s.id)
    assert len(found) == len(set(found)) == 2
    assert schedules.get(s.id).materialized_until == s.materialized_until


def test_counts_by_state_and_skipped_slots(world: World) -> None:
    schedules = world.store.schedules
    schedules.create(spec(world))
    late = schedules.create(spec(world, every=3600))
    schedules.create(spec(world, paused=True))
    schedules.create(spec(world, start_in=0, end_in=0.2))
    elapse(world, late.id, 150)
    world.store.claim_due([t.id for t in made(world, late.id)])
    world.advance(0.3)  # the last one's end passes
    assert schedules.counts() == ScheduleCounts(active=2, paused=1, ended=1, skipped=1)


def test_a_load_names_the_schedules_due_for_their_next_slots(world: World) -> None:
    schedules = world.store.schedules
    s = schedules.create(spec(world))  # its latest slot made: 90 s from now
    schedules.create(spec(world, start_in=-100, paused=True))
    horizon = world.now() + timedelta(seconds=60)
    assert world.store.load_near_term(None, horizon, schedules_within=60).schedules == []
    assert world.store.load_near_term(None, horizon, schedules_within=100).schedules == [s.id]
    assert world.store.load_near_term(None, horizon).schedules == []


# -- what the claim decides about occurrences -----------------------------------------------------


def test_the_claim_skips_an_occurrence_later_than_its_limit(world: World) -> None:
    s = world.store.schedules.create(spec(world, every=3600))
    first, second = made(world, s.id)
    elapse(world, s.id, 150)  # the first is two minutes late; its limit is one
    claimed = world.store.claim_due([first.id, second.id])
    assert isinstance(claimed, Claims)
    assert claimed.skipped_schedules == (s.id,) and claimed == []
    skipped = world.store.get(first.id)
    assert skipped.status is TimerStatus.CANCELED
    assert skipped.last_error == "skipped: later than its catch-up limit of 60 s"
    assert world.store.schedules.get(s.id).skipped == 1
    assert world.status(second.id) is TimerStatus.PENDING


def test_an_occurrence_claimed_before_is_never_late(world: World) -> None:
    s = world.store.schedules.create(spec(world, start_in=-0.05, every=3600))
    first = made(world, s.id)[0]
    [claimed] = world.store.claim_due([first.id])
    assert world.store.release([(first.id, claimed.claim)]) == 1
    elapse(world, s.id, 150)
    [again] = world.store.claim_due([first.id])  # a lost claim recovered: taken on time
    assert again.claim == 2 and again.schedule_id == s.id


def test_latest_fires_its_only_overdue_slot_however_late(world: World) -> None:
    s = world.store.schedules.create(spec(world, every=86400, catchup="latest"))
    first, tomorrow = made(world, s.id)
    elapse(world, s.id, 2 * 3600 + 30)
    assert [c.id for c in world.store.claim_due([first.id, tomorrow.id])] == [first.id]
    assert world.store.schedules.get(s.id).skipped == 0


def test_latest_skips_the_overdue_occurrences_a_later_one_follows(world: World) -> None:
    schedules = world.store.schedules
    s = schedules.create(spec(world, every=600, catchup="latest"))
    elapse(world, s.id, 1850)  # its two slots made are 30 and 20 minutes late
    done = schedules.top_up([s.id])
    # The latest slot missed since (due now), the next one (50 s late: within its grace) and two
    # ahead; the missed one before it is not made, but its slot is the latest's own.
    assert (done.made, done.skipped) == (4, 0)
    due = [t for t in made(world, s.id) if t.execute_at <= world.now()]
    claimed = world.store.claim_due([t.id for t in due])
    assert sorted(c.id for c in claimed) == sorted(t.id for t in due[2:])
    assert [world.store.get(t.id).last_error for t in due[:2]] == [
        "skipped: a later occurrence is due (catch-up latest)"
    ] * 2
    assert schedules.get(s.id).skipped == 2


def test_overlap_skip_skips_while_another_occurrence_runs_or_waits_to_retry(
    world: World,
) -> None:
    schedules = world.store.schedules
    s = schedules.create(spec(world, start_in=-0.05, every=3600, overlap="skip"))
    first = made(world, s.id)[0]
    [claimed] = world.store.claim_due([first.id])
    world.advance(0.01)
    running = schedules.trigger(s.id, None)
    skipped = world.store.claim_due([running.id])
    assert isinstance(skipped, Claims)
    assert skipped.skipped_schedules == (s.id,) and skipped == []
    assert world.store.get(running.id).last_error == (
        "skipped: the previous occurrence is still running"
    )
    world.store.begin_deliveries([(first.id, claimed.claim)], lease=60)
    world.store.finish_many([Outcome(first.id, claimed.claim, "HTTP 503", 3600.0)])
    world.advance(0.01)
    waiting = schedules.trigger(s.id, None)
    assert world.store.claim_due([waiting.id]) == []  # the first waits for its retry
    assert schedules.get(s.id).skipped == 2


def test_a_timer_of_no_schedule_is_claimed_as_before(world: World) -> None:
    timer = world.store.create(NewTimer(world.now(), "http", HOOK))
    [claimed] = world.store.claim_due([timer.id])
    assert claimed.id == timer.id and claimed.schedule_id is None
