"""The twin of `timers.store.repository`: timers made, read, changed, canceled and redriven."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from timers.errors import RedriveLimitReached
from timers.models import Timer, TimerStatus
from timers.retries import MAX_REDRIVES
from timers.storage import (
    Created,
    IdempotencyKey,
    IdempotencyKeyReused,
    NewTimer,
    TimerNotFound,
    TimerNotPending,
    check_changes,
)
from timers.storage.batches import answer_batch, makes_a_timer
from timers.testing.table import TimerTable, owned


def new_timer(new: NewTimer, now: datetime) -> Timer:
    """The row a new `pending` timer gets, with a fresh UUIDv7 id."""
    return Timer(
        **new.row_values(),
        status=TimerStatus.PENDING,
        created_at=now,
        updated_at=now,
    )


class InMemoryRepository(TimerTable):
    def create(self, new: NewTimer) -> Timer:
        return self.create_many([new])[0]

    def create_many(self, batch: Sequence[NewTimer]) -> list[Timer]:
        with self._operation() as now:
            made = [new_timer(new, now) for new in batch]
            for timer in made:
                self._put(timer, None)
            return made

    def create_once(self, batch: Sequence[NewTimer]) -> list[Created]:
        with self._operation() as now:
            # The batch's keys that name a timer already (as the unique index finds them).
            pairs = {(n.idempotency.owner, n.idempotency.key) for n in batch if n.idempotency}
            earlier = {
                pair: (self._timers[timer_id], request)
                for pair in pairs
                if pair in self._keys
                for timer_id, request in [self._keys[pair]]
                if timer_id in self._timers
            }
            fresh = {index: new_timer(batch[index], now) for index in makes_a_timer(batch, earlier)}
            answers = answer_batch(batch, fresh.__getitem__, earlier)  # raises before any insert
            for index, timer in fresh.items():
                self._put(timer, None)
                key = batch[index].idempotency
                if key is not None:
                    self._keys[(key.owner, key.key)] = (timer.id, key.request)
            return answers

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
        with self._operation():
            return self._owned_row(timer_id, owner)

    def _owned_row(self, timer_id: uuid.UUID, owner: str | None) -> Timer:
        """The row of this timer (of this owner, when given); raises TimerNotFound."""
        timer = owned(self._timers.get(timer_id), owner)
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

    def update_pending(
        self, timer_id: uuid.UUID, changes: Mapping[str, Any], owner: str | None = None
    ) -> Timer:
        check_changes(changes)
        return self._change_pending(timer_id, dict(changes), owner)

    def cancel(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        return self._change_pending(timer_id, {"status": TimerStatus.CANCELED}, owner)

    def _change_pending(
        self, timer_id: uuid.UUID, changes: dict[str, Any], owner: str | None
    ) -> Timer:
        with self._operation() as now:
            timer = self._owned_row(timer_id, owner)
            if timer.status is not TimerStatus.PENDING:
                raise TimerNotPending(timer_id, timer.status)
            return self._update(timer, now, **changes)

    def redrive(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        with self._operation() as now:
            timer = self._owned_row(timer_id, owner)
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

    def ping(self) -> None:
        with self._operation():
            pass
