"""What the rest of the package needs from a store of timers, split by who calls it (as
APScheduler 4's `DataStore` holds only the scheduling life cycle):

- `TimerRepository`: the API and the Python API (create, read, list, change, cancel, redrive);
- `SchedulerStore`: the scheduler (load, claim, release, recover, fail what it missed);
- `DeliveryStore`: the workers (start deliveries, renew their leases, record their outcomes);
- `Housekeeping`: monitoring and retention (counts, backlog, lateness, purge);
- `ScheduleStore`, a store's `schedules`: recurring schedules, as the API sees them
  (`ScheduleRepository`) and as the scheduler keeps their next slots made (`ScheduleSlots`).

`Store` is all of them: `timers.store.TimerStore` is the PostgreSQL one (the truth in production),
`timers.testing.InMemoryStore` its in-memory twin for fast tests of the decisions built on it. One
contract suite (tests/contract, one file per role) runs against both, so they can't drift.

Each operation is one transaction. "Now" is the store's own clock (the database's `now()` for
PostgreSQL), the one that every scheduler and worker compares against. Every method may raise
StoreUnavailable or StoreError.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from timers.models import Claimed, DueTime, Timer
from timers.schedules.model import Schedule, ScheduleSpec
from timers.storage.values import (
    Change,
    Claim,
    Created,
    IdempotencyKey,
    LatenessMinute,
    NearTerm,
    NewTimer,
    Outcome,
    PagePosition,
    Purged,
    PurgePosition,
    RecoveryRules,
    ScheduleCounts,
    Stats,
    TimerFilter,
    TimerPage,
    ToppedUp,
)


class ChangeFeed(Protocol):
    """Change notifications: a hint, not the truth (a claim re-checks every timer it takes). A
    reader re-reads the rows whose status they do not give, and after `open` (a first open, or a
    reopen after a lost connection) reloads everything."""

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None: ...

    def wait(self, timeout: float) -> list[Change]:
        """The changes that arrive within `timeout` seconds; raises when the feed is lost."""
        ...

    def close(self) -> None: ...


class TimerRepository(Protocol):
    """Timers as the API and the Python API see them: made, read, listed, changed, canceled."""

    def create(self, new: NewTimer) -> Timer:
        """Insert one `pending` timer with a fresh UUIDv7 id."""
        ...

    def create_many(self, batch: Sequence[NewTimer]) -> list[Timer]:
        """Insert `pending` timers, all or none, in the order given."""
        ...

    def create_once(self, batch: Sequence[NewTimer]) -> list[Created]:
        """Insert `pending` timers, all or none, in the order given; a timer whose idempotency key
        (per owner) already names one is not inserted again: that one is returned (`created`
        False) when it was made from the same request, else IdempotencyKeyReused is raised and
        nothing is inserted. Concurrent calls with one key make one timer."""
        ...

    def find_by_key(self, key: IdempotencyKey) -> Timer | None:
        """The timer this idempotency key (per owner) made, or None; raises IdempotencyKeyReused
        when it was made from a different request."""
        ...

    def find(self, timer_id: uuid.UUID) -> Timer | None: ...

    def get(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        """The timer with this id (and, given an owner, that owner); raises TimerNotFound."""
        ...

    def count_pending(self, owner: str, up_to: int) -> int:
        """How many `pending` timers this owner has, counted up to `up_to`."""
        ...

    def page(
        self,
        *,
        where: TimerFilter | None = None,
        limit: int = 50,
        offset: int = 0,
        sort: str = "created_at",
        order: str = "desc",
        after: PagePosition | None = None,
        with_total: bool = True,
    ) -> TimerPage:
        """The timers matching `where`, in `sort` order (ties by id), `limit` of them from
        `offset`, or (keyset) just past `after`; `next` is where the following page starts.
        `total` counts every match when `with_total` (an estimate on large tables, see
        `total_exact`), else is None."""
        ...

    def cancel_matching(self, where: TimerFilter) -> int:
        """`pending` → `canceled` for every pending timer matching `where`, in one statement;
        how many. A timer claimed meanwhile is not touched."""
        ...

    def update_pending(
        self, timer_id: uuid.UUID, changes: Mapping[str, Any], owner: str | None = None
    ) -> Timer:
        """Apply `changes` (execute_at, callback_type, callback_config, metadata) if the timer is
        still `pending`; raises TimerNotFound (also for another owner's timer, given an owner)
        or TimerNotPending."""
        ...

    def cancel(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        """`pending` → `canceled`; raises TimerNotFound (also for another owner's timer, given
        an owner) or TimerNotPending."""
        ...

    def ping(self) -> None: ...

    def redrive(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        """`failed` → `pending`, due now, with a fresh attempt budget, at most MAX_REDRIVES
        times; raises TimerNotFound (also for another owner's timer, given an owner),
        TimerNotPending (with the status) or RedriveLimitReached."""
        ...


class SchedulerStore(Protocol):
    """The scheduler's side of a timer's life cycle: what is due, claims, and recovery."""

    def load_near_term(
        self,
        start: datetime | None,
        end: datetime,
        limit: int = 100_000,
        recovery: RecoveryRules | None = None,
        schedules_within: float | None = None,
    ) -> NearTerm:
        """The `pending` timers with `start <= execute_at <= end` (no lower bound when None),
        earliest first, at most `limit`; with `recovery`, first puts the stranded `executing`
        timers back to `pending` and returns them too; with `schedules_within`, also the ids of
        the live schedules whose latest occurrence made is due within that many seconds (their
        next slots are to be made), in the same statement."""
        ...

    def pending_by_ids(self, timer_ids: Iterable[uuid.UUID]) -> list[DueTime]:
        """The id and `execute_at` of those of `timer_ids` that are `pending` now."""
        ...

    def changes(self) -> ChangeFeed: ...

    def claim_due(self, timer_ids: Sequence[uuid.UUID]) -> list[Claimed]:
        """Flip to `executing` (a new claim: `claims` + 1) those of `timer_ids` still `pending`
        and due by the store's clock; returns exactly those (a `Claims`), as their id, claim
        number, due time and schedule (a claim reads none of a timer's JSON: its cost does not
        grow with the timer). An occurrence of a schedule is skipped instead (`canceled`,
        `last_error` `skipped: …`, counted in its schedule's `skipped`) when, never claimed
        before, it is later than its late limit (under catch-up `latest`: only while a later
        occurrence of its schedule is due), or when its schedule's overlap is `skip` and another
        of its occurrences is executing or waiting for a retry; their schedules are the claim's
        `skipped_schedules`. Every verdict reads the timers as they were before the claim."""
        ...

    def release(self, claims: Sequence[Claim]) -> int:
        """Back to `pending`: the claims still `executing` under that claim and not started."""
        ...

    def fail_missed(self, recovery_window: float) -> int:
        """`pending` timers due more than `recovery_window` seconds ago → `failed` (`missed: …`)."""
        ...


class DeliveryStore(Protocol):
    """The workers' side of a timer's life cycle: a claim's delivery, its lease and its outcome."""

    def begin_deliveries(self, claims: Sequence[Claim], lease: float) -> list[Timer]:
        """Start the claims still `executing` under that claim and not started: `started_at`
        now, leased for `lease` seconds. Returns those (without `metadata` and `history`)."""
        ...

    def renew_leases(self, claims: Sequence[Claim], lease: float) -> int:
        """Extend to now + `lease` the leases of the claims still `executing` under that claim."""
        ...

    def finish_many(self, outcomes: Sequence[Outcome]) -> int:
        """Record outcomes of claims still `executing` under that claim: `completed` (error None),
        `failed` with `last_error`, or back to `pending` for a retry `retry_in` seconds from now;
        `executed_at` now, one more delivery attempt, the entry appended to the (bounded)
        history. Returns how many were recorded."""
        ...


class Housekeeping(Protocol):
    """Monitoring and retention: counts, the due backlog, lateness, and purging finished timers."""

    def stats(self) -> Stats:
        """Counts by status, the due backlog and the recent lateness, cheaply."""
        ...

    def counts(self) -> tuple[dict[str, int], bool]:
        """Timers by status (every status), and whether those are estimates."""
        ...

    def due_backlog(self) -> int:
        """Pending timers already due, up to BACKLOG_CAP."""
        ...

    def lateness(self) -> list[LatenessMinute]:
        """Per minute of the last LATENESS_MINUTES, how late the deliveries of the timers that
        finished then had started."""
        ...

    def purge_finished(
        self, older_than: float, limit: int, at: PurgePosition | None = None
    ) -> Purged | None:
        """Look at up to `limit` finished timers from `at` (None: the pass's start), in the order
        of FINISHED then (updated_at, id), and delete those that finished more than
        `older_than` seconds ago; None when another purge holds the lock (one at a time)."""
        ...


class ScheduleRepository(Protocol):
    """Schedules as the API, the Python API and the beat sync see them. Each slot of a schedule is
    one timer in the timers' table, an occurrence (`schedule_id`, `scheduled_for`), unique per
    (schedule, slot) whoever makes it; which slots to make is `timers.schedules.plan`'s to say
    (`timers.storage.occurrences`), the store's is to make them in the same transaction. Given an
    owner, a schedule of another owner is not found (ScheduleNotFound)."""

    def create(self, spec: ScheduleSpec) -> Schedule:
        """Insert a schedule with a fresh UUIDv7 id and, unless paused, its first occurrences; its
        first slot is the first at or after both `start_at` and a second before now
        (`occurrences.made_until_at_creation`). A name the owner gave another schedule raises
        ScheduleNameTaken."""
        ...

    def get(self, schedule_id: uuid.UUID, owner: str | None = None) -> Schedule: ...

    def page(
        self,
        owner: str | None,
        *,
        name: str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: uuid.UUID | None = None,
    ) -> tuple[list[Schedule], uuid.UUID | None]:
        """Schedules in creation order (by id), `limit` of them after the id `after` (a cursor)
        or from `offset`; and the cursor of the next page (None: the last)."""
        ...

    def replace(self, schedule_id: uuid.UUID, spec: ScheduleSpec, owner: str | None) -> Schedule:
        """Give the schedule a new spec (its owner stays) from its next unfired slot: its `pending`
        occurrences are deleted and its slots after now made again (unless paused); one executing
        goes on. ScheduleNameTaken changes nothing."""
        ...

    def set_paused(self, schedule_id: uuid.UUID, paused: bool, owner: str | None) -> Schedule:
        """Pause (its `pending` occurrences deleted) or resume (its slots after now made again,
        those missed while paused not); nothing changes when it is so already."""
        ...

    def delete(self, schedule_id: uuid.UUID, owner: str | None) -> int:
        """Delete the schedule and cancel its `pending` occurrences (the others stay, its
        history); how many were canceled."""
        ...

    def trigger(self, schedule_id: uuid.UUID, owner: str | None) -> Timer:
        """Insert one extra occurrence, due now, with `scheduled_for` now."""
        ...

    def occurrences(self, schedule_id: uuid.UUID, limit: int = 10) -> list[Timer]:
        """The schedule's latest occurrences, latest slot first."""
        ...


class ScheduleSlots(Protocol):
    """Schedules as the scheduler keeps them: their next slots made, their counts for metrics."""

    def top_up(
        self, schedule_ids: Sequence[uuid.UUID] | None = None, lookahead: float = 60.0
    ) -> ToppedUp:
        """Make the next slots of the given live schedules (not paused, slots left before
        `end_at`), or with None of those whose latest slot made is due within `lookahead`
        seconds, at most SCHEDULES_PER_LOAD, earliest first: each one's planned occurrences are
        inserted unless their slot exists, its `materialized_until` advanced (never moved back)
        and the missed slots added to its `skipped`. A schedule another process is topping up
        right now is left to it."""
        ...

    def counts(self) -> ScheduleCounts:
        """Every schedule by state (paused; ended: not paused, its `end_at` passed; else active)
        and the sum of their `skipped`."""
        ...


class ScheduleStore(ScheduleRepository, ScheduleSlots, Protocol):
    """Both roles of schedules: a store's `schedules`."""


class Store(TimerRepository, SchedulerStore, DeliveryStore, Housekeeping, Protocol):
    """Every role: what one database (or its twin) serves."""

    @property
    def schedules(self) -> ScheduleStore:
        """The schedules kept in the same database as the timers they make."""
        ...
