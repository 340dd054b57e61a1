"""The values a store of timers takes and returns, and its errors (the roles that take them are
in `timers.storage.roles`).

Nothing here imports a database driver: callers catch `StoreUnavailable` (the database can't be
reached right now: retry later) and `StoreError` (anything else the database refused).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

from timers.models import DEFAULT_OWNER, DueTime, Timer, TimerStatus, uuid7

SORT_COLUMNS = ("created_at", "execute_at", "updated_at")
SORT_ORDERS = ("asc", "desc")
# What `update_pending` may change.
PENDING_CHANGES = frozenset({"execute_at", "callback_type", "callback_config", "metadata", "retry"})
MAX_ERROR_LENGTH = 500
LOST_CLAIM = "recovered: claimed but never picked up by a worker"
LOST_DELIVERY = "recovered: the worker delivering it stopped renewing its lease"

# A claim: the timer's id and the claim number (its `claims`) it was enqueued under.
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

    def row_values(self) -> dict[str, Any]:
        """The values of its row, with a fresh UUIDv7 id (status, times and key aside)."""
        return {
            "id": uuid7(),
            "execute_at": self.execute_at,
            "callback_type": self.callback_type,
            "callback_config": dict(self.callback_config),
            "metadata": None if self.metadata is None else dict(self.metadata),
            "retry": None if self.retry is None else dict(self.retry),
            "owner": self.owner,
        }


HISTORY_LENGTH = 20  # attempts kept per timer, the latest ones


@dataclass(frozen=True)
class Outcome:
    """How one delivery attempt of a claim ended, and what follows: `retry_in` seconds until the
    next attempt (the timer goes back to `pending`), or None (`completed` when `error` is None,
    else `failed`). `entry` is the attempt as the history shows it."""

    timer_id: uuid.UUID
    claim: int  # the claim number the delivery ran under
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
    schedules: list[uuid.UUID] = []  # schedules whose next slots are to be made (0012)


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

    @property
    def excludes_pending(self) -> bool:
        """Whether it asks for a status other than `pending` (a bulk cancel then matches none)."""
        return self.status not in (None, TimerStatus.PENDING)


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


# -- schedules (0012) ------------------------------------------------------------------------------

SCHEDULES_PER_LOAD = 1000  # schedules a load names for their next slots, and one top-up makes


class ScheduleNotFound(StoreError):
    def __init__(self, schedule_id: uuid.UUID) -> None:
        super().__init__(f"schedule {schedule_id} not found")
        self.schedule_id = schedule_id


class ScheduleNameTaken(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"name: {name!r} is taken by another schedule of this key")
        self.name = name


@dataclass(frozen=True)
class ToppedUp:
    """What a top-up did: occurrences planned (each made unless its slot existed already), missed
    slots skipped, schedules looked at."""

    made: int = 0
    skipped: int = 0
    schedules: int = 0


class ScheduleCounts(NamedTuple):
    """Schedules by state, and the slots skipped as counted on the schedules."""

    active: int
    paused: int
    ended: int
    skipped: int


@dataclass(frozen=True)
class Change:
    """A timer that became pending, changed while pending, or was canceled. `pending`: whether
    it is pending now (False: canceled), or None where the notification did not say."""

    timer_id: uuid.UUID
    execute_at: datetime
    pending: bool | None = None


def clip_error(error: str | None) -> str | None:
    """`last_error` as stored: at most MAX_ERROR_LENGTH characters."""
    if error is not None and len(error) > MAX_ERROR_LENGTH:
        return error[: MAX_ERROR_LENGTH - 1] + "…"
    return error


def check_changes(changes: Mapping[str, Any]) -> None:
    """Raise ValueError unless every change is one `update_pending` may make."""
    unknown = set(changes) - PENDING_CHANGES
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")


def check_sort(sort: str, order: str) -> None:
    """Raise ValueError unless a page may be sorted so."""
    if sort not in SORT_COLUMNS or order not in SORT_ORDERS:
        raise ValueError(f"bad sort {sort!r} / order {order!r}")
