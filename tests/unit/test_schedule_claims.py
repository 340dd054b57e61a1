"""What a scheduler fires of a schedule's slots, with its own loader, execution loop and schedule
keeper on the in-memory twins, the clock moved by hand (the twin's schedules are held to
PostgreSQL's contract by tests/contract/test_schedule_store.py):

- every scheduler down across 5 slots of a 1-second schedule, then one starts: `skip` fires none
  of the missed slots, `latest` one, `all` each one;
- a `latest` schedule whose overdue slot was made before every scheduler went down fires it
  (whatever its period), and only the latest of several;
- a schedule whose due occurrences were all skipped gets its next slots at once, not at the next
  load; and a claim's next slots are made on the keeper's thread.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from tests.support.receiver import wait_until
from timers.models import TimerStatus
from timers.scheduler.cache import TimerCache
from timers.scheduler.execution import ExecutionLoop
from timers.scheduler.loader import MemoryLoader
from timers.schedules.keeper import ScheduleKeeper
from timers.schedules.model import Schedule, ScheduleSpec
from timers.schedules.slots import Timing
from timers.storage import TimerFilter
from timers.testing import InMemoryStore, ManualClock, RecordingEnqueuer

HOOK = {"type": "http", "url": "https://receiver.example/hook", "headers": {}, "payload": {}}
SECOND = timedelta(seconds=1)


class Scheduler:
    """One scheduler on the twin: its loader (under the default misfire policy, `fire`; without
    `sweep`, its loads make no schedule slots, as between two sweeps), execution loop and
    schedule keeper, and what it enqueued."""

    def __init__(
        self, store: InMemoryStore, *, sweep: bool = True, background: bool = False
    ) -> None:
        clock = store.clock
        self.keeper = ScheduleKeeper(store.schedules, background=background)
        self.cache = TimerCache()
        self.enqueuer = RecordingEnqueuer()
        self.loader = MemoryLoader(
            store,
            self.cache,
            recovery_window=300,
            lookahead=60,
            clock=clock,
            fire_overdue=True,
            top_up=self.keeper.sweep if sweep else None,
        )
        self.loop = ExecutionLoop(
            store, self.cache, self.enqueuer, clock=clock, after_claim=self.keeper.after_claim
        )

    def run(self) -> int:
        """One load and one tick: what a scheduler does when it starts, or each second."""
        self.loader.load()
        return self.loop.tick()


def schedule(store: InMemoryStore, start_in: float, every: float, **fields: object) -> Schedule:
    start = store.clock() + timedelta(seconds=start_in)
    return store.schedules.create(
        ScheduleSpec(
            timing=Timing(start_at=start, every=every),
            callback_type="http",
            callback_config=HOOK,
            **fields,  # type: ignore[arg-type]
        )
    )


def statuses(store: InMemoryStore, schedule_id: uuid.UUID) -> list[tuple[datetime, TimerStatus]]:
    """Its occurrences' slots and statuses, in slot order."""
    page = store.page(where=TimerFilter(schedule_id=schedule_id), limit=200)
    found = [(t.scheduled_for, t.status) for t in page.timers if t.scheduled_for is not None]
    return sorted(found)


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore(ManualClock())


@pytest.mark.parametrize(("catchup", "fired"), [("skip", 0), ("latest", 1), ("all", 5)])
def test_missed_slots_after_every_scheduler_was_down(
    store: InMemoryStore, catchup: str, fired: int
) -> None:
    clock = store.clock
    assert isinstance(clock, ManualClock)
    window = 3600 if catchup == "all" else None
    s = schedule(store, 0, 1.0, catchup=catchup, catchup_window=window)
    start = s.spec.timing.start_at
    before = Scheduler(store)
    for _ in range(3):  # slots 0, 1 and 2 fire on time, and the next two are made
        assert before.run() == 1
        clock.advance(1)
    # Every scheduler dies: slots 3 to 7 fall while none runs (3 and 4 were made before, the
    # others not), and slot 8 is a tenth of a second old when one starts.
    clock.advance(5.1)
    after = Scheduler(store)
    after.loader.load()  # finds the schedule due for its slots and makes them
    after.run()
    missed = {start + k * SECOND for k in range(3, 8)}
    claimed = {store.get(c.id).scheduled_for for c in after.enqueuer.enqueued}
    assert len(claimed & missed) == fired
    assert start + 8 * SECOND in claimed  # on time, within its grace
    assert store.schedules.get(s.id).skipped == 5 - fired


def test_latest_daily_slot_made_before_the_downtime_fires(store: InMemoryStore) -> None:
    assert isinstance(store.clock, ManualClock)
    s = schedule(store, 30, 86400.0, catchup="latest")
    # Its first slot (made at creation) is now two hours overdue; its next is tomorrow.
    store.clock.advance(2 * 3600 + 30)
    assert Scheduler(store).run() == 1
    first = statuses(store, s.id)[0]
    assert first[1] is TimerStatus.EXECUTING, first
    assert store.schedules.get(s.id).skipped == 0


def test_latest_fires_only_the_latest_of_its_overdue_slots(store: InMemoryStore) -> None:
    assert isinstance(store.clock, ManualClock)
    s = schedule(store, 30, 600.0, catchup="latest")
    start = s.spec.timing.start_at
    # The two slots made at creation are overdue beyond their grace now (by ~30 and ~20 min), and
    # so is the one after them (the sweep makes it, due now); the fourth is due within its grace
    # and fires on time.
    store.clock.advance(1850)
    scheduler = Scheduler(store)
    scheduler.loader.load()
    scheduler.run()
    missed = [(slot, st) for slot, st in statuses(store, s.id) if slot < start + 1800 * SECOND]
    fired = [slot for slot, status in missed if status is TimerStatus.EXECUTING]
    assert len(missed) == 3 and fired == [missed[-1][0]], missed  # one fired: the latest
    assert store.schedules.get(s.id).skipped == 2  # the two made before, skipped by the claim


def test_a_schedule_whose_due_slots_were_all_skipped_gets_its_next_slots_at_once(
    store: InMemoryStore,
) -> None:
    assert isinstance(store.clock, ManualClock)
    s = schedule(store, 30, 3600.0, catchup="skip")
    # Both slots made are overdue beyond their grace: the claim skips both, and nothing is left
    # pending until the schedule's next slots are made.
    store.clock.advance(3600 + 30 + 120)
    scheduler = Scheduler(store, sweep=False)
    scheduler.loader.load()
    before = len(statuses(store, s.id))
    assert scheduler.loop.tick() == 0
    states = statuses(store, s.id)
    assert [st for _, st in states[:before]] == [TimerStatus.CANCELED] * before, states
    now = store.clock()
    assert [slot for slot, st in states if st is TimerStatus.PENDING and slot > now], states


def test_a_claims_next_slots_are_made_on_the_keepers_thread(store: InMemoryStore) -> None:
    """As the scheduler runs it: the claim returns before the next slots are made (so a herd
    of schedules is claimed at the claim's pace), and they are made right after."""
    assert isinstance(store.clock, ManualClock)
    s = schedule(store, -0.1, 1.0, catchup="all", catchup_window=3600)
    start = s.spec.timing.start_at
    scheduler = Scheduler(store, background=True)
    store.clock.advance(1.0)  # a second later: two slots due, one left ahead
    made_before = len(statuses(store, s.id))
    due = [t.id for t in store.page(where=TimerFilter(schedule_id=s.id)).timers]
    scheduler.cache.upsert(store.pending_by_ids(due))
    assert scheduler.loop.tick() == 2
    assert wait_until(scheduler.keeper.idle, 10)
    slots = [at for at, _ in statuses(store, s.id)]
    assert len(slots) == made_before + 1  # the slot after the two that were ahead
    assert slots == sorted(slots) and slots[-1] == start + 3 * SECOND


def test_a_tick_asks_for_next_slots_once_after_its_last_batch(store: InMemoryStore) -> None:
    """A herd claimed in several batches is topped up once, with every schedule it took, after
    the last batch was enqueued (so the top-up never holds up the next batch's claim)."""
    assert isinstance(store.clock, ManualClock)
    made = [schedule(store, 0.5, 60.0) for _ in range(5)]
    store.clock.advance(1.0)
    asked: list[tuple[int, list[uuid.UUID]]] = []
    cache, enqueuer = TimerCache(), RecordingEnqueuer()
    loop = ExecutionLoop(
        store,
        cache,
        enqueuer,
        clock=store.clock,
        batch_size=2,
        after_claim=lambda claims: asked.append(
            (len(enqueuer.sent), sorted(c.schedule_id for c in claims if c.schedule_id))
        ),
    )
    due = store.page(where=TimerFilter(status=TimerStatus.PENDING)).timers
    cache.upsert(store.pending_by_ids([t.id for t in due if t.execute_at <= store.clock()]))
    assert loop.tick() == 5
    assert asked == [(5, sorted(s.id for s in made))]
