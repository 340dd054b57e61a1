"""The bounds a timer keeps, where PostgreSQL is the subject: the scheduler's claim of big timers
reads none of their configs back (the rest is in tests/unit/test_api_bounds.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.unit.test_api_bounds import big_timers
from timers.models import TimerStatus
from timers.store import TimerStore

# -- the scheduler reads none of it --------------------------------------------------------------


def test_a_claim_of_big_timers_returns_only_id_claim_number_and_due_time(
    store: TimerStore,
) -> None:
    made = big_timers(store, 5, datetime.now(UTC) - timedelta(seconds=1))
    claimed = store.claim_due([t.id for t in made])
    assert {type(c).__name__ for c in claimed} == {"Claimed"}
    assert {c._fields for c in claimed} == {("id", "claim", "execute_at", "schedule_id")}
    assert sorted(tuple(c) for c in claimed) == sorted((t.id, 1, t.execute_at, None) for t in made)
    assert {store.get(t.id).status for t in made} == {TimerStatus.EXECUTING}
    # What a claim that missed some re-reads: their ids and due times alone.
    later = big_timers(store, 2, datetime.now(UTC) + timedelta(hours=1))
    again = store.pending_by_ids([t.id for t in later + made])
    assert sorted(tuple(p) for p in again) == sorted((t.id, t.execute_at) for t in later)
