"""In-memory twins of the scheduler's outside world, for tests that must run in milliseconds:
`InMemoryStore` (the `Store` protocol on dicts, with a clock you can move) and `RecordingEnqueuer`
(an `Enqueuer` that keeps its messages and can be told the broker is down).

They behave as PostgreSQL and the Celery broker do for everything the scheduler and the workers
rely on: tests/contract runs the same suite against each twin and its real counterpart. Where a
twin can't follow (PostgreSQL's `now()` is another host's clock; a database restart), the suite
says so.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from timers.errors import RedriveLimitReached
from timers.models import Claimed, DueTime, Timer, TimerStatus, uuid7
from timers.retries import MAX_REDRIVES
from timers.storage import (
    BACKLOG_CAP,
    FINISHED,
    HISTORY_LENGTH,
    LATENESS_MINUTES,
    LOST_CLAIM,
    LOST_DELIVERY,
    SORT_COLUMNS,
    SORT_ORDERS,
    Change,
    Claim,
    Created,
    IdempotencyKey,
    IdempotencyKeyReused,
    LatenessMinute,
    NearTerm,
    NewTimer,
    Outcome,
    PagePosition,
    Purged,
    PurgePosition,
    Recovered,
    RecoveryRules,
    Stats,
    StoreUnavailable,
    TimerFilter,
    TimerNotFound,
    TimerNotPending,
    TimerPage,
    clip_error,
)


class ManualClock:
    """A wall clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_timer(new: NewTimer, now: datetime) -> Timer:
    return Timer(
        id=uuid7(),
        execute_at=new.execute_at,
        callback_type=new.callback_type,
        callback_config=dict(new.callback_config),
        status=TimerStatus.PENDING,
        created_at=now,
        updated_at=now,
        metadata=None if new.metadata is None else dict(new.metadata),
        retry=None if new.retry is None else dict(new.retry),
        owner=new.owner,
    )


def _owned(timer: Timer | None, owner: str | None) -> Timer | None:
    """The timer, if it is this owner's (any owner's for None)."""
    return timer if timer is not None and owner in (None, timer.owner) else None


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


def _matches(timer: Timer, where: TimerFilter) -> bool:
    return (
        (where.status is None or timer.status is where.status)
        and (where.callback_type is None or timer.callback_type == where.callback_type)
        and (where.metadata is None or contains(timer.metadata, dict(where.metadata)))
        and (where.execute_after is None or timer.execute_at >= where.execute_after)
        and (where.execute_before is None or timer.execute_at < where.execute_before)
        and (where.owner is None or timer.owner == where.owner)
    )


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks, as PostgreSQL's percentile_cont."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class InMemoryStore:
    """The `Store` protocol on a dict of timers, one lock around every operation (each is atomic,
    as each PostgreSQL statement is). Set `unavailable` to make every call raise StoreUnavailable,
    as an unreachable database does."""

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self.clock = clock
        self.unavailable = False
        # PostgreSQL's pg_postmaster_start_time(): long ago, unless `restart()` says otherwise.
        self.started_at = clock() - timedelta(days=365)
        self._timers: dict[uuid.UUID, Timer] = {}
        # The unique index on (api_key_hash, idempotency_key): the timer and its request_hash.
        self._keys: dict[tuple[str, str], tuple[uuid.UUID, str]] = {}
        # The `redrives` column, which Timer doesn't carry: a timer's redrives so far.
        self._redrives: dict[uuid.UUID, int] = {}
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

    # -- API and clients --------------------------------------------------------------------

    def create(self, new: NewTimer) -> Timer:
        return self.create_many([new])[0]

    def create_many(self, batch: Sequence[NewTimer]) -> list[Timer]:
        with self._operation() as now:
            made = [_new_timer(new, now) for new in batch]
            for timer in made:
                self._put(timer, None)
            return made

    def create_once(self, batch: Sequence[NewTimer]) -> list[Created]:
        with self._operation() as now:
            keys = dict(self._keys)  # kept only if the whole batch goes in
            fresh: list[Timer] = []
            answers: list[tuple[uuid.UUID, bool]] = []
            for index, new in enumerate(batch):
                key = new.idempotency
                if key is not None and (key.owner, key.key) in keys:
                    timer_id, request = keys[(key.owner, key.key)]
                    if request != key.request:
                        raise IdempotencyKeyReused(key.key, timer_id, index)
                    answers.append((timer_id, False))
                    continue
                timer = _new_timer(new, now)
                fresh.append(timer)
                if key is not None:
                    keys[(key.owner, key.key)] = (timer.id, key.request)
                answers.append((timer.id, True))
            for timer in fresh:
                self._put(timer, None)
            self._keys = keys
            return [Created(self._timers[timer_id], made) for timer_id, made in answers]

    def find_by_key(self, key: IdempotencyKey) -> Timer | None:
        with self._operation():
            found = self._keys.get((key.owner, key.key))
            if found is None:
                return None
            timer_id, request = found
            if request != key.request:
                raise IdempotencyKeyReused(key.key, timer_id)
            return self._timers[timer_id]

    def find(self, timer_id: uuid.UUID) -> Timer | None:
        with self._operation():
            return self._timers.get(timer_id)

    def get(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        timer = _owned(self.find(timer_id), owner)
        if timer is None:
            raise TimerNotFound(timer_id)
        return timer

    def count_pending(self, owner: str, up_to: int) -> int:
        with self._operation():
            mine = (
                t for t in self._timers.values()
                if t.owner == owner and t.status is TimerStatus.PENDING
            )  # fmt: skip
            return sum(1 for _, _ in zip(range(up_to), mine, strict=False))

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
        if sort not in SORT_COLUMNS or order not in SORT_ORDERS:
            raise ValueError(f"bad sort {sort!r} / order {order!r}")
        descending = order == "desc"
        with self._operation():
            rows = [t for t in self._timers.values() if _matches(t, where or TimerFilter())]
        total = len(rows) if with_total else None
        rows.sort(key=lambda t: (getattr(t, sort), t.id), reverse=descending)
        if after is not None:
            rows = [
                t
                for t in rows
                if (
                    (getattr(t, sort), t.id) < after
                    if descending
                    else (getattr(t, sort), t.id) > after
                )
            ]
        page = rows[offset : offset + limit]
        more = len(rows) > offset + limit
        return TimerPage(
            timers=page,
            total=total,
            next=(getattr(page[-1], sort), page[-1].id) if more else None,
            total_exact=None if total is None else True,
        )

    def cancel_matching(self, where: TimerFilter) -> int:
        if where.status not in (None, TimerStatus.PENDING):
            return 0
        with self._operation() as now:
            doomed = [
                t
                for t in self._timers.values()
                if t.status is TimerStatus.PENDING and _matches(t, where)
            ]
            for timer in doomed:
                self._update(timer, now, status=TimerStatus.CANCELED)
        return len(doomed)

    def stats(self) -> Stats:
        counts, estimated = self.counts()
        return Stats(counts, estimated, self.due_backlog(), self.lateness())

    def counts(self) -> tuple[dict[str, int], bool]:
        with self._operation():
            found = [t.status.value for t in self._timers.values()]
        return {s.value: found.count(s.value) for s in TimerStatus}, False

    def due_backlog(self) -> int:
        with self._operation() as now:
            due = [
                t
                for t in self._timers.values()
                if t.status is TimerStatus.PENDING and t.execute_at <= now
            ]
        return min(len(due), BACKLOG_CAP)

    def lateness(self) -> list[LatenessMinute]:
        with self._operation() as now:
            since = now - timedelta(minutes=LATENESS_MINUTES)
            recent = [
                t
                for t in self._timers.values()
                if t.status in (TimerStatus.COMPLETED, TimerStatus.FAILED)
                and t.updated_at > since
                and t.started_at is not None
            ]
        minutes: dict[datetime, list[float]] = {}
        for t in recent:
            minute = t.updated_at.replace(second=0, microsecond=0)
            late = (t.started_at - t.execute_at).total_seconds() * 1000  # type: ignore[operator]
            minutes.setdefault(minute, []).append(late)
        return [
            LatenessMinute(m, len(v), _percentile(v, 0.5), _percentile(v, 0.99), max(v))
            for m, v in sorted(minutes.items())
        ]

    def purge_finished(
        self, older_than: float, limit: int, at: PurgePosition | None = None
    ) -> Purged | None:
        def position(t: Timer) -> tuple[int, datetime, uuid.UUID]:
            return FINISHED.index(t.status), t.updated_at, t.id

        start = (FINISHED.index(at.status), at.updated_at, at.id) if at else None
        with self._operation() as now:
            cutoff = now - timedelta(seconds=older_than)
            doomed = sorted(
                (
                    t
                    for t in self._timers.values()
                    if t.status in FINISHED and t.updated_at < cutoff
                ),
                key=position,
            )
            doomed = [t for t in doomed if start is None or position(t) > start][:limit]
            for timer in doomed:
                del self._timers[timer.id]
        last = doomed[-1] if len(doomed) >= limit else None
        return Purged(
            len(doomed), PurgePosition(last.status, last.updated_at, last.id) if last else None
        )

    def update_pending(
        self, timer_id: uuid.UUID, changes: Mapping[str, Any], owner: str | None = None
    ) -> Timer:
        allowed = {"execute_at", "callback_type", "callback_config", "metadata", "retry"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")
        return self._change_pending(timer_id, dict(changes), owner)

    def cancel(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        return self._change_pending(timer_id, {"status": TimerStatus.CANCELED}, owner)

    def _change_pending(
        self, timer_id: uuid.UUID, changes: dict[str, Any], owner: str | None
    ) -> Timer:
        with self._operation() as now:
            timer = _owned(self._timers.get(timer_id), owner)
            if timer is None:
                raise TimerNotFound(timer_id)
            if timer.status is not TimerStatus.PENDING:
                raise TimerNotPending(timer_id, timer.status)
            return self._update(timer, now, **changes)

    def ping(self) -> None:
        with self._operation():
            pass

    # -- scheduler ---------------------------------------------------------------------------

    def load_near_term(
        self,
        start: datetime | None,
        end: datetime,
        limit: int = 100_000,
        recovery: RecoveryRules | None = None,
    ) -> NearTerm:
        with self._operation() as now:
            # PostgreSQL's statement reads the table as it was before its own recovery UPDATE.
            near = sorted(
                (
                    t
                    for t in self._timers.values()
                    if t.status is TimerStatus.PENDING
                    and t.execute_at <= end
                    and (start is None or t.execute_at >= start)
                ),
                key=lambda t: t.execute_at,
            )[:limit]
            recovered = self._recover(recovery, now) if recovery is not None else []
        loaded = [DueTime(t.id, t.execute_at) for t in near]
        return NearTerm(loaded + [DueTime(r.id, r.execute_at) for r in recovered], recovered)

    def _recover(self, rules: RecoveryRules, now: datetime) -> list[Recovered]:
        lease = timedelta(seconds=rules.lease)
        database_up_long_enough = self.started_at < now - lease
        recovered = []
        for timer in list(self._timers.values()):
            if timer.status is not TimerStatus.EXECUTING:
                continue
            if timer.started_at is not None:
                lease_end = timer.leased_until or timer.started_at + lease
                stranded = lease_end < now and database_up_long_enough
            else:
                stranded = (
                    rules.queue_idle
                    and timer.claimed_at is not None
                    and timer.claimed_at < now - timedelta(seconds=rules.enqueue_timeout)
                )
            if stranded:
                reason = LOST_CLAIM if timer.started_at is None else LOST_DELIVERY
                self._update(
                    timer,
                    now,
                    status=TimerStatus.PENDING,
                    claimed_at=None,
                    started_at=None,
                    leased_until=None,
                    last_error=reason,
                )
                recovered.append(Recovered(timer.id, timer.execute_at, reason))
        return recovered

    def pending_by_ids(self, timer_ids: Iterable[uuid.UUID]) -> list[DueTime]:
        with self._operation():
            found = (self._timers.get(i) for i in set(timer_ids))
            return [
                DueTime(t.id, t.execute_at)
                for t in found
                if t is not None and t.status is TimerStatus.PENDING
            ]

    def changes(self) -> InMemoryFeed:
        feed = InMemoryFeed(self)
        with self._lock:
            self._feeds.append(feed)
        return feed

    def claim_due(self, timer_ids: Sequence[uuid.UUID]) -> list[Claimed]:
        with self._operation() as now:
            claimed = []
            for timer_id in dict.fromkeys(timer_ids):
                timer = self._timers.get(timer_id)
                if timer is None or timer.status is not TimerStatus.PENDING:
                    continue
                if timer.execute_at > now:
                    continue
                claimed.append(
                    self._update(
                        timer,
                        now,
                        status=TimerStatus.EXECUTING,
                        claimed_at=now,
                        started_at=None,
                        leased_until=None,
                        attempts=timer.attempts + 1,
                    )
                )
            return [Claimed(t.id, t.attempts, t.execute_at) for t in claimed]

    def release(self, claims: Sequence[Claim]) -> int:
        with self._operation() as now:
            released = 0
            for timer in self._under_claim(claims, unstarted=True):
                self._update(timer, now, status=TimerStatus.PENDING, claimed_at=None)
                released += 1
            return released

    def fail_missed(self, recovery_window: float) -> int:
        with self._operation() as now:
            cutoff = now - timedelta(seconds=recovery_window)
            missed = [
                t
                for t in self._timers.values()
                if t.status is TimerStatus.PENDING and t.execute_at < cutoff
            ]
            for timer in missed:
                due = timer.execute_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
                error = (
                    f"missed: due at {due}Z, more than {recovery_window:g}s before a scheduler "
                    "could fire it"
                )
                self._update(timer, now, status=TimerStatus.FAILED, last_error=error)
            return len(missed)

    # -- worker ------------------------------------------------------------------------------

    def _under_claim(self, claims: Sequence[Claim], *, unstarted: bool = False) -> list[Timer]:
        found: dict[uuid.UUID, Timer] = {}
        for timer_id, attempt in claims:
            timer = self._timers.get(timer_id)
            if timer is None or timer.status is not TimerStatus.EXECUTING:
                continue
            if timer.attempts != attempt or (unstarted and timer.started_at is not None):
                continue
            found[timer.id] = timer
        return list(found.values())

    def begin_deliveries(self, claims: Sequence[Claim], lease: float) -> list[Timer]:
        with self._operation() as now:
            until = now + timedelta(seconds=lease)
            return [
                _for_delivery(self._update(timer, now, started_at=now, leased_until=until))
                for timer in self._under_claim(claims, unstarted=True)
            ]

    def renew_leases(self, claims: Sequence[Claim], lease: float) -> int:
        with self._operation() as now:
            until = now + timedelta(seconds=lease)
            renewed = self._under_claim(claims)
            for timer in renewed:
                self._update(timer, now, leased_until=until)
            return len(renewed)

    def finish_many(self, outcomes: Sequence[Outcome]) -> int:
        with self._operation() as now:
            by_claim = {(o.timer_id, o.attempt): o for o in outcomes}
            finished = self._under_claim(list(by_claim))
            for timer in finished:
                outcome = by_claim[(timer.id, timer.attempts)]
                history = list(timer.history)
                if outcome.entry is not None:
                    history = [*history, dict(outcome.entry)][-HISTORY_LENGTH:]
                changes: dict[str, Any] = {
                    "status": outcome.status,
                    "last_error": clip_error(outcome.error),
                    "executed_at": now,
                    "leased_until": None,
                    "delivery_attempts": timer.delivery_attempts + 1,
                    "history": tuple(history),
                }
                if outcome.retry_in is not None:
                    changes.update(
                        execute_at=now + timedelta(seconds=outcome.retry_in),
                        claimed_at=None,
                        started_at=None,
                    )
                self._update(timer, now, **changes)
            return len(finished)

    def redrive(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        with self._operation() as now:
            timer = _owned(self._timers.get(timer_id), owner)
            if timer is None:
                raise TimerNotFound(timer_id)
            if timer.status is not TimerStatus.FAILED:
                raise TimerNotPending(timer_id, timer.status)
            redrives = self._redrives.get(timer_id, 0)
            if redrives >= MAX_REDRIVES:
                raise RedriveLimitReached(timer_id, redrives)
            self._redrives[timer_id] = redrives + 1
            return self._update(
                timer,
                now,
                status=TimerStatus.PENDING,
                execute_at=now,
                delivery_attempts=0,
                claimed_at=None,
                started_at=None,
                leased_until=None,
            )


class InMemoryFeed:
    """The twin of PostgreSQL's LISTEN/NOTIFY feed: changes made while it is open."""

    def __init__(self, store: InMemoryStore) -> None:
        self.store = store
        self._changes: list[Change] = []
        self._arrived = threading.Condition()
        self._open = False

    def notify(self, change: Change) -> None:
        with self._arrived:
            if self._open:
                self._changes.append(change)
                self._arrived.notify_all()

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        if self.store.unavailable:
            raise StoreUnavailable("the database is unavailable (in-memory store)")
        with self._arrived:
            self._open = True
            self._changes.clear()

    def wait(self, timeout: float) -> list[Change]:
        with self._arrived:
            if not self._open:
                raise StoreUnavailable("change feed lost (in-memory store)")
            if not self._changes:
                self._arrived.wait(timeout)
            changes, self._changes = self._changes, []
            return changes

    def close(self) -> None:
        with self._arrived:
            self._open = False
            self._changes.clear()


class RecordingEnqueuer:
    """The twin of `CeleryEnqueuer`: keeps the claims it was given, one list per message of up to
    `per_task`; while `down`, it refuses every message and `ready()` is False."""

    def __init__(self, per_task: int = 50) -> None:
        self.per_task = per_task
        self.down = False
        self.messages: list[list[Claim]] = []
        self.consumed = 0  # messages taken from the queue by workers
        self._refused = False

    def queue_idle(self) -> bool:
        if self.down:
            raise ConnectionError("the broker is down (recording enqueuer)")
        return self.consumed == len(self.messages)

    def consume(self) -> None:
        """Workers take every waiting message."""
        self.consumed = len(self.messages)

    def ready(self) -> bool:
        if self._refused and self.down:
            return False
        self._refused = False
        return True

    def enqueue(self, timers: Sequence[Claimed]) -> list[uuid.UUID]:
        if self.down:
            self._refused = True
            return [t.id for t in timers]
        for start in range(0, len(timers), self.per_task):
            self.messages.append([(t.id, t.attempt) for t in timers[start : start + self.per_task]])
        return []

    @property
    def sent(self) -> list[Claim]:
        return [claim for message in self.messages for claim in message]


def _for_delivery(timer: Timer) -> Timer:
    """A claimed or started timer as the store returns it: without metadata and history."""
    return replace(timer, metadata=None, history=())
