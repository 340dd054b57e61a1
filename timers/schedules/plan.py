"""Which occurrences a schedule needs made now: pure, given the schedule and `now`.

A schedule keeps its next `AHEAD` slots made as pending timers, so the next occurrence exists
before the current one fires. Slots missed while no scheduler ran (later than their grace) follow
the schedule's `catchup`: `skip` makes none of them, `latest` the latest one (due now), `all` each one within `catchup_window` (each due at once, in
order); the others are counted as skipped. Occurrences made before a downtime are the claim's to
decide (queries.sql, `claim_due`): under `latest` the latest due one fires however late.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from timers.schedules.model import Schedule
from timers.schedules.slots import jitter_for

AHEAD = 2  # slots after now that always exist as pending occurrences
GRACE = 60.0  # seconds an occurrence may be late and still fire (catchup skip and latest) ...
# ... but no more than one period: a slot of a 1-second schedule 5 s late is missed.
MAX_SLOTS = 10_000  # slots one plan examines; the next top-up goes on from there


@dataclass(frozen=True)
class Occurrence:
    """One slot made into a timer: its slot, when it fires, and how late it may still fire
    (seconds; None: whenever)."""

    scheduled_for: datetime
    execute_at: datetime
    late_limit: float | None


@dataclass(frozen=True)
class Plan:
    occurrences: list[Occurrence]
    materialized_until: datetime  # the latest slot examined (or end_at once none are left)
    skipped: int  # missed slots not made


def late_limit(schedule: Schedule, period: float) -> float | None:
    """How late (seconds) an occurrence of this schedule may fire: its `catchup_window` (none:
    any lateness) under `all`, else the grace, at most one period."""
    spec = schedule.spec
    if spec.catchup == "all":
        return spec.catchup_window
    return max(1.0, min(GRACE, period))


def plan(schedule: Schedule, now: datetime) -> Plan:
    """The occurrences to make after `materialized_until`, up to `AHEAD` slots after `now`."""
    spec, timing = schedule.spec, schedule.spec.timing
    made: list[Occurrence] = []
    skipped = 0
    latest_missed: datetime | None = None
    last = schedule.materialized_until
    # The slots after now made already.
    ahead = sum(1 for s in timing.next_slots(now, AHEAD) if s <= last) if last > now else 0
    slots = timing.slots(last)
    slot = next(slots, None)
    examined = 0
    exhausted = slot is None
    while slot is not None and ahead < AHEAD and examined < MAX_SLOTS:
        following = next(slots, None)
        period = (following - slot).total_seconds() if following is not None else GRACE
        limit = late_limit(schedule, period)
        execute_at = slot + jitter_for(schedule.id, slot, spec.jitter)
        examined += 1
        last = slot
        if slot > now:
            ahead += 1
            made.append(Occurrence(slot, execute_at, limit))
        elif limit is None or (now - execute_at).total_seconds() <= limit:
            made.append(Occurrence(slot, execute_at, limit))
        elif spec.catchup == "latest":
            skipped += latest_missed is not None
            latest_missed = slot
        else:
            skipped += 1
        slot = following
        exhausted = slot is None
    if latest_missed is not None:
        if examined >= MAX_SLOTS and ahead < AHEAD:
            skipped += 1  # more missed slots follow; the latest is among them
        else:
            made.append(Occurrence(latest_missed, now, None))
    if exhausted and timing.end_at is not None:
        last = max(last, timing.end_at)
    made.sort(key=lambda o: o.scheduled_for)
    return Plan(
        occurrences=made,
        materialized_until=last,
        skipped=skipped,
    )


def next_fire_times(schedule: Schedule, after: datetime, count: int = 5) -> list[datetime]:
    """When the next `count` slots after `after` fire (jitter included)."""
    spec = schedule.spec
    return [
        slot + jitter_for(schedule.id, slot, spec.jitter)
        for slot in spec.timing.next_slots(after, count)
    ]
