"""The twin's table of timers: the rows, one lock around every operation, the unique index of
idempotency keys, and the notifications the migrations' trigger sends. Each role's twin
(`repository`, `listing`, `scheduling`, `delivery`, `housekeeping`) works on it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from timers.models import Timer, TimerStatus
from timers.storage import Change, Claim, StoreUnavailable, TimerFilter
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
