"""The twin of `timers.store.retention`: counts, the due backlog, lateness, and the purge."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from timers.models import Timer, TimerStatus
from timers.storage import (
    BACKLOG_CAP,
    FINISHED,
    LATENESS_MINUTES,
    LatenessMinute,
    Purged,
    PurgePosition,
    Stats,
)
from timers.testing.table import TimerTable


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks, as PostgreSQL's percentile_cont."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class InMemoryHousekeeping(TimerTable):
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
            LatenessMinute(m, len(v), percentile(v, 0.5), percentile(v, 0.99), max(v))
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
                self._delete(timer)
        last = doomed[-1] if len(doomed) >= limit else None
        return Purged(
            len(doomed), PurgePosition(last.status, last.updated_at, last.id) if last else None
        )
