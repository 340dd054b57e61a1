"""Which occurrences a schedule needs made (pure, with a moved clock): the next two slots, and
the slots missed while no scheduler ran, by catch-up policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from timers.models import uuid7
from timers.schedules.model import Schedule, ScheduleSpec
from timers.schedules.plan import AHEAD, plan
from timers.schedules.slots import Timing

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def schedule(catchup: str = "skip", window: float | None = None, every: float = 1.0) -> Schedule:
    spec = ScheduleSpec(
        timing=Timing(start_at=T0, every=every),
        callback_type="http",
        callback_config={"type": "http", "url": "https://example.com/"},
        catchup=catchup,
        catchup_window=window,
    )
    return Schedule(uuid7(), spec, T0, T0, materialized_until=T0 + timedelta(seconds=2))


def test_on_time_the_next_two_slots_exist() -> None:
    s = schedule()
    done = plan(s, T0 + timedelta(seconds=1.5))
    # slot 2 is made already; slot 3 makes two after now
    assert [o.scheduled_for for o in done.occurrences] == [T0 + timedelta(seconds=3)]
    assert done.skipped == 0


@pytest.mark.parametrize(("catchup", "fired"), [("skip", 0), ("latest", 1), ("all", 5)])
def test_five_missed_slots_by_policy(catchup: str, fired: int) -> None:
    s = schedule(catchup, window=3600 if catchup == "all" else None)
    now = T0 + timedelta(seconds=8.5)  # slots 3..7 missed (more than a period late), 8 on time
    done = plan(s, now)
    missed = [o for o in done.occurrences if o.scheduled_for <= T0 + timedelta(seconds=7)]
    assert len(missed) == fired
    assert done.skipped == 5 - fired
    ahead = [o for o in done.occurrences if o.scheduled_for > now]
    assert len(ahead) == AHEAD
    if catchup == "latest":
        assert missed[0].scheduled_for == T0 + timedelta(seconds=7)
        assert missed[0].execute_at == now and missed[0].late_limit is None
    assert done.materialized_until == T0 + timedelta(seconds=10)


def test_all_skips_the_slots_beyond_its_window() -> None:
    done = plan(schedule("all", window=2.5), T0 + timedelta(seconds=8.5))
    made = [o.scheduled_for for o in done.occurrences]
    assert made[0] == T0 + timedelta(seconds=6)
    assert done.skipped == 3


def test_an_ended_schedule_makes_nothing_and_is_marked_done() -> None:
    s = schedule()
    spec = ScheduleSpec(
        timing=Timing(start_at=T0, every=1, end_at=T0 + timedelta(seconds=2)),
        callback_type="http",
        callback_config={},
    )
    done = plan(Schedule(s.id, spec, T0, T0, T0 + timedelta(seconds=1)), T0 + timedelta(seconds=1))
    assert done.occurrences == []
    assert done.materialized_until == T0 + timedelta(seconds=2)
