"""The twin of `timers.store.scheduling`: the near-term load with recovery, claims, releases,
the change feed and the `skip` misfire policy."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from timers.models import Claimed, DueTime, TimerStatus
from timers.storage import (
    LOST_CLAIM,
    LOST_DELIVERY,
    Claim,
    NearTerm,
    Recovered,
    RecoveryRules,
)
from timers.testing.feed import InMemoryFeed
from timers.testing.table import TimerTable


class InMemoryScheduling(TimerTable):
    def load_near_term(
        self,
        start: datetime | None,
        end: datetime,
        limit: int = 100_000,
        recovery: RecoveryRules | None = None,
        schedules_within: float | None = None,
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
        # The twin keeps no schedules: none ever needs its next slots made.
        return NearTerm(loaded + [DueTime(r.id, r.execute_at) for r in recovered], recovered, [])

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
                        claims=timer.claims + 1,
                    )
                )
            return [Claimed(t.id, t.claims, t.execute_at) for t in claimed]

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
