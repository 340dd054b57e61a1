"""What the claim decides about occurrences, with the scheduler's own loader and execution loop on
PostgreSQL: a `latest` schedule whose overdue slot was made before every scheduler went down
fires it (whatever its period), and a schedule whose due occurrences were all skipped gets its
next slots at once, not at the next load."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from tests.support.receiver import wait_until
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


def _scheduler(
    store: TimerStore, schedules: ScheduleStore, *, sweep: bool = True
) -> tuple[MemoryLoader, ExecutionLoop]:
    """The scheduler's loader (under the default misfire policy, `fire`) and execution loop;
    without `sweep`, its loads make no schedule slots (as between two sweeps)."""
    keeper = ScheduleKeeper(schedules)
    cache = TimerCache()
    loader = MemoryLoader(
        store,
        cache,
        recovery_window=300,
        lookahead=60,
        fire_overdue=True,
        top_up=keeper.sweep if sweep else None,
    )
    return loader, ExecutionLoop(store, cache, Recorder(), after_claim=keeper.after_claim)


def _shift(store: TimerStore, schedule_id: object, seconds: float) -> None:
    """Move the schedule and its occurrences `seconds` into the past (as if that much time had
    passed while no scheduler ran)."""
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE schedules SET start_at = start_at - make_interval(secs => :s),"
                " materialized_until = materialized_until - make_interval(secs => :s)"
                " WHERE id = :id"
            ),
            {"id": schedule_id, "s": seconds},
        )
        conn.execute(
            text(
                "UPDATE timers SET execute_at = execute_at - make_interval(secs => :s),"
                " scheduled_for = scheduled_for - make_interval(secs => :s)"
                " WHERE schedule_id = :id"
            ),
            {"id": schedule_id, "s": seconds},
        )


def _statuses(store: TimerStore, schedule_id: object) -> list[tuple[datetime, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT scheduled_for, status FROM timers WHERE schedule_id = :id"
                " ORDER BY scheduled_for"
            ),
            {"id": schedule_id},
        )
        return [(r[0], r[1]) for r in rows]


def test_latest_daily_slot_made_before_the_downtime_fires(store: TimerStore) -> None:
    schedules = ScheduleStore(store.engine)
    start = datetime.now(UTC) + timedelta(seconds=30)
    s = schedules.create(
        ScheduleSpec(
            timing=Timing(start_at=start, every=86400.0),
            callback_type="http",
            callback_config=HOOK,
            catchup="latest",
        )
    )
    # Its first slot (made at creation) is now two hours overdue; its next is tomorrow.
    _shift(store, s.id, 2 * 3600 + 30)
    loader, loop = _scheduler(store, schedules)
    loader.load()
    loop.tick()
    first = _statuses(store, s.id)[0]
    assert first[1] == "executing", first
    assert schedules.get(s.id).skipped == 0


def test_latest_fires_only_the_latest_of_its_overdue_slots(store: TimerStore) -> None:
    schedules = ScheduleStore(store.engine)
    start = datetime.now(UTC) + timedelta(seconds=30)
    s = schedules.create(
        ScheduleSpec(
            timing=Timing(start_at=start, every=600.0),
            callback_type="http",
            callback_config=HOOK,
            catchup="latest",
        )
    )
    # The two slots made at creation are overdue beyond their grace now (by ~30 and ~20 min), and
    # so is the one after them (the sweep makes it, due now); the fourth is due within its grace
    # and fires on time.
    _shift(store, s.id, 1860)
    loader, loop = _scheduler(store, schedules)
    loader.load()
    loader.load()
    loop.tick()
    missed = [
        (slot, st) for slot, st in _statuses(store, s.id) if slot < start - timedelta(seconds=600)
    ]
    fired = [slot for slot, status in missed if status == "executing"]
    assert len(missed) == 3 and fired == [missed[-1][0]], missed  # one fired: the latest
    assert schedules.get(s.id).skipped == 2  # the two made before, skipped by the claim


def test_a_schedule_whose_due_slots_were_all_skipped_gets_its_next_slots_at_once(
    store: TimerStore,
) -> None:
    schedules = ScheduleStore(store.engine)
    start = datetime.now(UTC) + timedelta(seconds=30)
    s = schedules.create(
        ScheduleSpec(
            timing=Timing(start_at=start, every=3600.0),
            callback_type="http",
            callback_config=HOOK,
            catchup="skip",
        )
    )
    # Both slots made are overdue beyond their grace: the claim skips both, and nothing is left
    # pending until the schedule's next slots are made.
    _shift(store, s.id, 3600 + 30 + 120)
    loader, loop = _scheduler(store, schedules, sweep=False)
    loader.load()
    before = len(_statuses(store, s.id))
    loop.tick()
    states = _statuses(store, s.id)
    assert [st for _, st in states[:before]] == ["canceled"] * before, states
    now = datetime.now(UTC)
    assert [slot for slot, st in states if st == "pending" and slot > now], states


def test_a_claims_next_slots_are_made_on_the_keepers_thread(store: TimerStore) -> None:
    """As the scheduler runs it: the claim returns before the next slots are made (so a herd
    of schedules is claimed at the claim's pace), and they are made right after."""
    schedules = ScheduleStore(store.engine)
    start = datetime.now(UTC) - timedelta(milliseconds=100)
    s = schedules.create(
        ScheduleSpec(
            timing=Timing(start_at=start, every=1.0),
            callback_type="http",
            callback_config=HOOK,
            catchup="all",  # no slot skipped as late, however slow this machine
            catchup_window=3600,
        )
    )
    keeper = ScheduleKeeper(schedules, background=True)
    loop = ExecutionLoop(store, TimerCache(), Recorder(), after_claim=keeper.after_claim)
    _shift(store, s.id, 1.0)  # a second later: two slots due, one left ahead
    made_before = len(_statuses(store, s.id))
    with store.engine.connect() as conn:
        due = (
            conn.execute(
                text("SELECT id FROM timers WHERE schedule_id = :id AND execute_at <= now()"),
                {"id": s.id},
            )
            .scalars()
            .all()
        )
    loop.cache.upsert(store.pending_by_ids(due))
    assert loop.tick() == 2
    assert wait_until(keeper.idle, 10)
    slots = [at for at, _ in _statuses(store, s.id)]
    assert len(slots) == made_before + 1  # the slot after the two that were ahead
    assert slots == sorted(slots) and slots[-1] == start + timedelta(seconds=2)
