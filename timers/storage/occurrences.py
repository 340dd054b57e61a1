"""How a schedule's slots become timers (its occurrences): the rules are the same whichever store
keeps the schedules, so they are written once, here (with `timers.schedules.plan`, which says
which slots to make); a store only reads, locks, inserts and counts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from timers.models import TimerStatus
from timers.schedules.model import Schedule
from timers.schedules.plan import Plan
from timers.storage.values import NewTimer

# A start_at this close before now is "now": a schedule made to start now by another host's
# clock (the API's, a moment behind the database's) fires its first slot at once.
NOW_GRACE = timedelta(seconds=1)
_TINY = timedelta(microseconds=1)

# The columns of an occurrence that `Timer` does not carry: what its claim decides on alone,
# without reading its schedule (see the `claim_due` query).
CLAIM_RULES = ("late_limit", "skip_if_running")


def made_until_at_creation(start_at: datetime, now: datetime) -> datetime:
    """A new schedule's `materialized_until`: just before its first slot, which is the first at or
    after both `start_at` and NOW_GRACE before `now` (nothing before its creation is caught up)."""
    return max(start_at, now - NOW_GRACE) - _TINY


def occurrence_row(
    schedule: Schedule, slot: datetime, execute_at: datetime, late_limit: float | None
) -> dict[str, Any]:
    """The `timers` row of one slot of the schedule (a fresh UUIDv7 id, `pending`), firing at
    `execute_at` and skipped when later than `late_limit` seconds (None: never)."""
    spec = schedule.spec
    new = NewTimer(
        execute_at=execute_at,
        callback_type=spec.callback_type,
        callback_config=spec.callback_config,
        metadata=spec.metadata,
        retry=spec.retry,
        owner=spec.owner,
    )
    return new.row_values() | {
        "status": TimerStatus.PENDING.value,
        "schedule_id": schedule.id,
        "scheduled_for": slot,
        "late_limit": late_limit,
        "skip_if_running": spec.overlap == "skip",
    }


def planned_rows(schedule: Schedule, planned: Plan) -> list[dict[str, Any]]:
    """The rows of the occurrences a plan makes, in slot order."""
    return [
        occurrence_row(schedule, o.scheduled_for, o.execute_at, o.late_limit)
        for o in planned.occurrences
    ]


def triggered_row(schedule: Schedule, now: datetime) -> dict[str, Any]:
    """The row of an extra occurrence asked for now: due now, its slot now, never skipped as late."""
    return occurrence_row(schedule, now, now, None)
