"""The twin's tables: the timers' rows, one lock around every operation, the unique indexes of
idempotency keys and of occurrences' slots, the notifications the migrations' trigger sends, and
the schedules' rows. Each role's twin (`repository`, `listing`, `scheduling`, `delivery`,
`housekeeping`, `schedules`) works on them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from timers.models import Timer, TimerStatus
from timers.storage import Change, Claim, StoreError, StoreUnavailable, TimerFilter
from timers.storage.occurrences import CLAIM_RULES
from timers.testing.clock import utc_now
from timers.testing.feed import InMemoryFeed


def contains(document: Any, wanted: Any) -> bool:
    """PostgreSQL's jsonb containment (`document @> wanted`): objects by key, recursively; an
    array contains another when each wanted element is contained in one of its elements."""
    if isinstance(wanted, dict):
        return isinstance(document, dict) and all(
            key in document and contains(document[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return isinstance(document, list) and all(
            any(contains(have, want) for have in document) for want in wanted
        )
    if isinstance(document, bool) or isinstance(wanted, bool):
        return document is wanted
    return bool(document == wanted) and not isinstance(document, dict | list)


def matches(timer: Timer, where: TimerFilter) -> bool:
    """Whether the timer matches the filter (as `timers.store.listing.matching` asks it)."""
    return (
        (where.status is None or timer.status is where.status)
        and (where.callback_type is None or timer.callback_type == where.callback_type)
        and (where.metadata is None or contains(timer.metadata, dict(where.metadata)))
        and (where.execute_after is None or timer.execute_at >= where.execute_after)
        and (where.execute_before is None or timer.execute_at < where.execute_before)
        and (where.schedule_id is None or timer.schedule_id == where.schedule_id)
        and (where.owner is None or timer.owner == where.owner)
    )


def is_live(schedule: dict[str, Any]) -> bool:
    """Whether a schedule's row is live: not paused, and slots left before its `end_at`."""
    end_at = schedule["end_at"]
    return not schedule["paused"] and (end_at is None or schedule["materialized_until"] < end_at)


class ClaimRules(NamedTuple):
    """An occurrence's columns that `Timer` does not carry (`occurrences.CLAIM_RULES`)."""

    late_limit: float | None
    skip_if_running: bool


def owned(timer: Timer | None, owner: str | None) -> Timer | None:
    """The timer, if it is this owner's (any owner's for None)."""
    return timer if timer is not None and owner in (None, timer.owner) else None


class TimerTable:
    """The twin's rows. Set `unavailable` to make every call raise StoreUnavailable, as an
    unreachable database does."""

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self.clock = clock
        self.unavailable = False
        # PostgreSQL's pg_postmaster_start_time(): long ago, unless `restart()` says otherwise.
        self.started_at = clock() - timedelta(days=365)
        self._timers: dict[uuid.UUID, Timer] = {}
        # The unique index on (api_key_hash, idempotency_key): the timer and its request_hash.
        self._keys: dict[tuple[str, str], tuple[uuid.UUID, str]] = {}
        # The `redrives` column, which Timer doesn't carry: a timer's redrives so far.
        self._redrives: dict[uuid.UUID, int] = {}
        # The schedules' rows (0012), as `Schedule.from_row` reads them.
        self._schedules: dict[uuid.UUID, dict[str, Any]] = {}
        # Per occurrence: the columns `Timer` doesn't carry.
        self._claim_rules: dict[uuid.UUID, ClaimRules] = {}
        self._lock = threading.RLock()
        self._feeds: list[InMemoryFeed] = []

    def restart(self) -> None:
        """As if the database had just restarted (recovery then waits a lease)."""
        self.started_at = self.clock()

    @contextmanager
    def _operation(self) -> Iterator[datetime]:
        with self._lock:
            if self.unavailable:
                raise StoreUnavailable("the database is unavailable (in-memory store)")
            yield self.clock()

    def _put(self, timer: Timer, before: Timer | None) -> None:
        """Store a new version of a row, and notify as the migrations' trigger does."""
        self._timers[timer.id] = timer
        became_pending = timer.status is TimerStatus.PENDING
        canceled = (
            before is not None
            and before.status is TimerStatus.PENDING
            and timer.status is TimerStatus.CANCELED
        )
        if became_pending or canceled:
            for feed in self._feeds:
                feed.notify(Change(timer.id, timer.execute_at, became_pending))

    def _update(self, timer: Timer, now: datetime, **changes: Any) -> Timer:
        updated = replace(timer, updated_at=now, **changes)
        self._put(updated, timer)
        return updated

    def _under_claim(self, claims: Sequence[Claim], *, unstarted: bool = False) -> list[Timer]:
        """The timers still `executing` under one of these claims (and, with `unstarted`, not
        started by a worker yet)."""
        found: dict[uuid.UUID, Timer] = {}
        for timer_id, number in claims:
            timer = self._timers.get(timer_id)
            if timer is None or timer.status is not TimerStatus.EXECUTING:
                continue
            if timer.claims != number or (unstarted and timer.started_at is not None):
                continue
            found[timer.id] = timer
        return list(found.values())

    def _insert_occurrence(
        self, row: dict[str, Any], now: datetime, *, on_conflict_skip: bool = True
    ) -> Timer | None:
        """Insert an occurrence's row (`timers.storage.occurrences`); one whose (schedule, slot)
        is taken (the unique index of 0012) inserts nothing (None), or with `on_conflict_skip`
        False raises StoreError, as an INSERT without ON CONFLICT does."""
        slot = (row["schedule_id"], row["scheduled_for"])
        if any((t.schedule_id, t.scheduled_for) == slot for t in self._timers.values()):
            if on_conflict_skip:
                return None
            raise StoreError(
                'duplicate key value violates unique constraint "ux_timers_schedule_slot"'
            )
        values = {k: v for k, v in row.items() if k not in CLAIM_RULES}
        timer = Timer(**values, created_at=now, updated_at=now)
        self._claim_rules[timer.id] = ClaimRules(row["late_limit"], row["skip_if_running"])
        self._put(timer, None)
        return timer

    def _delete(self, timer: Timer) -> None:
        """Delete a timer's row."""
        del self._timers[timer.id]
        self._claim_rules.pop(timer.id, None)
