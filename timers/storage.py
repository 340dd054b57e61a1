"""What the rest of the package needs from a store of timers: the `Store` protocol, the values it
takes and returns, and its errors. `timers.store.TimerStore` is the PostgreSQL one (the truth in
production); `timers.testing.InMemoryStore` is its in-memory twin for fast tests of the decisions
built on it. One contract suite (tests/contract) runs against both, so they can't drift.

Nothing here imports a database driver: callers catch `StoreUnavailable` (the database can't be
reached right now: retry later) and `StoreError` (anything else the database refused).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from timers.models import DEFAULT_OWNER, Claimed, DueTime, Timer, TimerStatus

SORT_COLUMNS = ("created_at", "execute_at", "updated_at")
SORT_ORDERS = ("asc", "desc")
MAX_ERROR_LENGTH = 500
LOST_CLAIM = "recovered: claimed but never picked up by a worker"
LOST_DELIVERY = "recovered: the worker delivering it stopped renewing its lease"

# A claim: the timer's id and the claim number (`attempts`) it was enqueued under.
Claim = tuple[uuid.UUID, int]


class StoreError(Exception):
    """The database refused an operation; the message says why (on one line)."""


class StoreUnavailable(StoreError):
    """The database can't be reached (or the connection dropped): try again later."""


class TimerNotFound(LookupError):
    def __init__(self, timer_id: uuid.UUID) -> None:
        super().__init__(f"timer {timer_id} not found")
        self.timer_id = timer_id


class TimerNotPending(ValueError):
    """The timer exists but is no longer `pending`, so it can't be changed or canceled."""

    def __init__(self, timer_id: uuid.UUID, status: TimerStatus) -> None:
        super().__init__(f"timer {timer_id} is {status.value}; only pending timers can be changed")
        self.timer_id = timer_id
        self.status = status


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's idempotency key for one create: `key` as given, `owner` a hash of the API key
    that used it (keys are unique per API key; the API key itself is never stored) and `request`
    a hash of the canonical request, to tell a retry from a different request under the same key."""

    key: str
    owner: str
    request: str


class IdempotencyKeyReused(ValueError):
    """The key already made a timer, from a different request (`index`: the batch item that
    reused it)."""

    def __init__(self, key: str, timer_id: uuid.UUID, index: int = 0) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used for timer {timer_id} with a different "
            "request; use a new key for a new timer"
        )
        self.key = key
        self.timer_id = timer_id
        self.index = index


@dataclass(frozen=True)
class NewTimer:
    execute_at: datetime
    callback_type: str
    callback_config: Mapping[str, Any]
    metadata: Mapping[str, Any] | None = None
    retry: Mapping[str, Any] | None = None
    # Honoured by `create_once` (the other creates ignore it).
    idempotency: IdempotencyKey | None = None
    owner: str = DEFAULT_OWNER  # the principal making it


HISTORY_LENGTH = 20  # attempts kept per timer, the latest ones


@dataclass(frozen=True)
class Outcome:
    """How one delivery attempt of a claim ended, and what follows: `retry_in` seconds until the
    next attempt (the timer goes back to `pending`), or None (`completed` when `error` is None,
    else `failed`). `entry` is the attempt as the history shows it."""

    timer_id: uuid.UUID
    attempt: int  # the claim number
    error: str | None
    retry_in: float | None = None
    entry: Mapping[str, Any] | None = None
    late_ms: float = 0.0

    @property
    def status(self) -> TimerStatus:
        if self.retry_in is not None:
            return TimerStatus.PENDING
        return TimerStatus.COMPLETED if self.error is None else TimerStatus.FAILED


class Created(NamedTuple):
    """A timer `create_once` answers with: made now (`created`), or earlier under the same key."""

    timer: Timer
    created: bool


@dataclass(frozen=True)
class RecoveryRules:
    """Which `executing` timers are stranded and go back to `pending` to be fired again:

    - a started delivery whose lease ran out (its worker stopped renewing it: dead or cut off),
      once the database itself has been up for a whole `lease`;
    - a claim that no worker started within `enqueue_timeout` seconds (the scheduler died before
      enqueueing, or the broker lost the message), but only when the callback queue is idle
      (`queue_idle`): a message merely waiting in a long queue is not lost.
    """

    enqueue_timeout: float
    lease: float
    queue_idle: bool


class Recovered(NamedTuple):
    id: uuid.UUID
    execute_at: datetime
    reason: str


class NearTerm(NamedTuple):
    """What one load read: the timers for the cache, and those of them it recovered."""

    timers: list[DueTime]
    recovered: list[Recovered]


@dataclass(frozen=True)
class TimerFilter:
    """Which timers a list or a bulk cancel is about; every given condition must hold.
    `metadata` is containment (`metadata @> {...}` in PostgreSQL: every key given, with that
    value, nested objects likewise); `execute_after` is inclusive, `execute_before` exclusive."""

    status: TimerStatus | None = None
    callback_type: str | None = None
    metadata: Mapping[str, Any] | None = None
    execute_after: datetime | None = None
    execute_before: datetime | None = None
    schedule_id: uuid.UUID | None = None  # the occurrences of one schedule
    # Whose timers: one principal's, or every principal's (None). Not a condition a caller
    # chose: `is_empty` leaves it out.
    owner: str | None = None

    @property
    def is_empty(self) -> bool:
        """No condition but, perhaps, the owner."""
        return replace(self, owner=None) == TimerFilter()


# Where a keyset page starts: the sort column's value and the id of the last row read.
PagePosition = tuple[datetime, uuid.UUID]


class PurgePosition(NamedTuple):
    """Where a purge pass goes on: after this finished timer, in the order of FINISHED, then
    updated_at, then id."""

    status: TimerStatus
    updated_at: datetime
    id: uuid.UUID


# The statuses a timer ends in, in the order a purge pass walks them.
FINISHED = (TimerStatus.COMPLETED, TimerStatus.FAILED, TimerStatus.CANCELED)


class Purged(NamedTuple):
    """One purge batch: how many rows it deleted, and where the pass goes on (None: done)."""

    deleted: int
    next: PurgePosition | None


@dataclass(frozen=True)
class TimerPage:
    timers: list[Timer]
    total: int | None  # None unless asked for
    next: PagePosition | None = None  # where the next page starts; None after the last
    total_exact: bool | None = None  # whether `total` is exact, not an estimate (None: no total)


@dataclass(frozen=True)
class LatenessMinute:
    """Deliveries started in one minute: how many, and their lateness (started − due)."""

    minute: datetime
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Stats:
    counts: dict[str, int]  # by status, each status present
    counts_estimated: bool  # from the planner's statistics, on large tables
    due_backlog: int  # pending and due (not yet claimed), counted up to BACKLOG_CAP
    lateness: list[LatenessMinute]  # the last LATENESS_MINUTES, oldest first


BACKLOG_CAP = 100_000
LATENESS_MINUTES = 15
EXACT_COUNT_LIMIT = 100_000  # rows; beyond this, counts by status are estimates


@dataclass(frozen=True)
class Change:
    """A timer that became pending, changed while pending, or was canceled. `pending`: whether
    it is pending now (False: canceled), or None where the notification did not say."""

    timer_id: uuid.UUID
    execute_at: datetime
    pending: bool | None = None


class ChangeFeed(Protocol):
    """Change notifications: a hint, not the truth (a claim re-checks every timer it takes). A
    reader re-reads the rows whose status they do not give, and after `open` (a first open, or a reopen after a lost connection) reloads everything."""

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None: ...

    def wait(self, timeout: float) -> list[Change]:
        """The changes that arrive within `timeout` seconds; raises when the feed is lost."""
        ...

    def close(self) -> None: ...


def clip_error(error: str | None) -> str | None:
    """`last_error` as stored: at most MAX_ERROR_LENGTH characters."""
    if error is not None and len(error) > MAX_ERROR_LENGTH:
        return error[: MAX_ERROR_LENGTH - 1] + "…"
    return error


class Store(Protocol):
    """The operations on timers. Each is one transaction. "Now" is the store's own clock (the
    database's `now()` for PostgreSQL), the one that every scheduler and worker compares against.
    Every method may raise StoreUnavailable or StoreError."""

    # -- API and clients --------------------------------------------------------------------

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

    def stats(self) -> Stats:
        """Counts by status, the due backlog and the recent lateness, cheaply."""
        ...

    def counts(self) -> tuple[dict[str, int], bool]:
        """Timers by status (every status), and whether those are estimates."""
        ...

    def due_backlog(self) -> int:
        """Pending timers already due, up to BACKLOG_CAP."""
        ...

    def purge_finished(
        self, older_than: float, limit: int, at: PurgePosition | None = None
    ) -> Purged | None:
        """Look at up to `limit` finished timers from `at` (None: the pass's start), in the order
        of FINISHED then (updated_at, id), and delete those that finished more than
        `older_than` seconds ago; None when another purge holds the lock (one at a time)."""
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

    # -- scheduler ---------------------------------------------------------------------------

    def load_near_term(
        self,
        start: datetime | None,
        end: datetime,
        limit: int = 100_000,
        recovery: RecoveryRules | None = None,
    ) -> NearTerm:
        """The `pending` timers with `start <= execute_at <= end` (no lower bound when None),
        earliest first, at most `limit`; with `recovery`, first puts the stranded `executing`
        timers back to `pending` and returns them too."""
        ...

    def pending_by_ids(self, timer_ids: Iterable[uuid.UUID]) -> list[DueTime]:
        """The id and `execute_at` of those of `timer_ids` that are `pending` now."""
        ...

    def changes(self) -> ChangeFeed: ...

    def claim_due(self, timer_ids: Sequence[uuid.UUID]) -> list[Claimed]:
        """Flip to `executing` (a new claim: `attempts` + 1) those of `timer_ids` still `pending`
        and due by the store's clock; returns exactly those, as their id, claim number and due
        time (a claim reads none of a timer's JSON: its cost does not grow with the timer)."""
        ...

    def release(self, claims: Sequence[Claim]) -> int:
        """Back to `pending`: the claims still `executing` under that claim and not started."""
        ...

    def fail_missed(self, recovery_window: float) -> int:
        """`pending` timers due more than `recovery_window` seconds ago → `failed` (`missed: …`)."""
        ...

    # -- worker ------------------------------------------------------------------------------

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

    def redrive(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        """`failed` → `pending`, due now, with a fresh attempt budget, at most MAX_REDRIVES
        times; raises TimerNotFound (also for another owner's timer, given an owner),
        TimerNotPending (with the status) or RedriveLimitReached."""
        ...
