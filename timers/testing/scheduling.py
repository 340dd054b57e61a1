"""The twin of `timers.store.scheduling`: the near-term load with recovery and the schedules due
for their next slots, claims (with the verdicts on occurrences of `claim_due` in queries.sql),
releases, the change feed and the `skip` misfire policy."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from timers.models import Claimed, Claims, DueTime, Timer, TimerStatus
from timers.storage import (
    LOST_CLAIM,
    LOST_DELIVERY,
    SCHEDULES_PER_LOAD,
    Claim,
    NearTerm,
    Recovered,
    RecoveryRules,
)
from timers.testing.feed import InMemoryFeed
from timers.testing.table import ClaimRules, TimerTable, is_live


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
            schedules = (
                [] if schedules_within is None else self._due_schedules(now, schedules_within)
            )
        loaded = [DueTime(t.id, t.execute_at) for t in near]
        return NearTerm(
            loaded + [DueTime(r.id, r.execute_at) for r in recovered], recovered, schedules
        )

    def _due_schedules(self, now: datetime, within: float) -> list[uuid.UUID]:
        """The live schedules whose latest slot made is due within `within` seconds, earliest
        first, at most SCHEDULES_PER_LOAD."""
        horizon = now + timedelta(seconds=within)
        due = sorted(
            (
                s
                for s in self._schedules.values()
                if is_live(s) and s["materialized_until"] <= horizon
            ),
            key=lambda s: s["materialized_until"],
        )
        return [s["id"] for s in due[:SCHEDULES_PER_LOAD]]

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
            found = (self._timers.get(timer_id) for timer_id in dict.fromkeys(timer_ids))
            due = [
                t
                for t in found
                if t is not None and t.status is TimerStatus.PENDING and t.execute_at <= now
            ]
            # One statement: every verdict reads the table as it was before the claim.
            verdicts = {
                t.id: (t.schedule_id, reason)
                for t in due
                if t.schedule_id is not None
                and (reason := self._skip_reason(t, t.schedule_id, now)) is not None
            }
            claimed, skipped = [], []
            for timer in due:
                if timer.id in verdicts:
                    schedule_id, reason = verdicts[timer.id]
                    self._update(timer, now, status=TimerStatus.CANCELED, last_error=reason)
                    schedule = self._schedules.get(schedule_id)
                    if schedule is not None:
                        schedule["skipped"] += 1
                    skipped.append(schedule_id)
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
            return Claims(
                [Claimed(t.id, t.claims, t.execute_at, t.schedule_id) for t in claimed],
                skipped,
            )

    def _skip_reason(self, occurrence: Timer, schedule_id: uuid.UUID, now: datetime) -> str | None:
        """Why the claim skips this due occurrence of a schedule instead of claiming it, or
        None."""
        rules = self._claim_rules.get(occurrence.id, ClaimRules(None, False))
        late = (
            occurrence.claims == 0
            and rules.late_limit is not None
            and now - occurrence.execute_at > timedelta(seconds=rules.late_limit)
        )
        schedule = self._schedules.get(schedule_id)
        others = [
            t
            for t in self._timers.values()
            if t.schedule_id == schedule_id and t.id != occurrence.id
        ]
        if late and (schedule is None or schedule["catchup"] != "latest"):
            return f"skipped: later than its catch-up limit of {_as_sql_text(rules.late_limit)} s"
        if late and any(
            t.scheduled_for is not None
            and occurrence.scheduled_for is not None
            and t.scheduled_for > occurrence.scheduled_for
            and t.execute_at <= now
            and t.status is not TimerStatus.CANCELED
            for t in others
        ):
            return "skipped: a later occurrence is due (catch-up latest)"
        if rules.skip_if_running and any(
            t.status is TimerStatus.EXECUTING
            or (t.status is TimerStatus.PENDING and t.delivery_attempts > 0)
            for t in others
        ):
            return "skipped: the previous occurrence is still running"
        return None

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


def _as_sql_text(value: float | None) -> str:
    """A float8 as PostgreSQL writes it in text (`60`, `1.5`, `1e+16`)."""
    assert value is not None
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
