"""Monitoring and retention on the PostgreSQL store (`Housekeeping`): counts by status, the due
backlog, recent lateness, and purging finished timers a batch at a time."""

from __future__ import annotations

import uuid

from sqlalchemy import func, literal, select, text

from timers.models import TimerStatus
from timers.schema import timers
from timers.storage import (
    BACKLOG_CAP,
    EXACT_COUNT_LIMIT,
    FINISHED,
    LATENESS_MINUTES,
    LatenessMinute,
    Purged,
    PurgePosition,
    Stats,
)
from timers.store.connection import Connected
from timers.store.sql import queries

LATENESS_SAMPLE = 20_000
# Any fixed number: the key of the advisory lock that lets one purge run at a time.
PURGE_LOCK = 0x74696D657273  # "timers"
# A row another transaction holds longer than this fails the batch (the pass tries again later)
# instead of stalling every purge behind the advisory lock; set by the statement for itself.
PURGE_LOCK_TIMEOUT = 10.0
_NIL = uuid.UUID(int=0)

ESTIMATE_COUNTS = text(queries["estimate_counts"])
LATENESS = text(queries["lateness"])
PURGE = text(queries["purge_finished"])
COUNT_BY_STATUS = select(timers.c.status, func.count()).group_by(timers.c.status)
DUE_BACKLOG = select(func.count()).select_from(
    select(literal(1))
    .where(timers.c.status == TimerStatus.PENDING.value, timers.c.execute_at <= func.now())
    .limit(BACKLOG_CAP)
    .subquery()
)


class RetentionStatements(Connected):
    def stats(self) -> Stats:
        """Three cheap statements: counts by status (exact below EXACT_COUNT_LIMIT rows, else
        the planner's estimates), the due backlog, and the recent lateness."""
        counts, estimated = self.counts()
        return Stats(counts, estimated, self.due_backlog(), self.lateness())

    def counts(self) -> tuple[dict[str, int], bool]:
        """Timers by status, and whether those are estimates: below EXACT_COUNT_LIMIT rows (by
        the table's statistics) a `count(*)` per status; above, the table's row estimate times
        each status's frequency in its statistics (kept by autovacuum's ANALYZE), read from the
        catalog without touching the table."""
        with self._statement() as conn:
            row = conn.execute(ESTIMATE_COUNTS).first()
            if row is not None and row.rows >= EXACT_COUNT_LIMIT and row.statuses:
                found = dict(zip(row.statuses, row.frequencies, strict=True))
                return {s.value: round(found.get(s.value, 0) * row.rows) for s in TimerStatus}, True
            exact = dict(conn.execute(COUNT_BY_STATUS).all())
        return {s.value: int(exact.get(s.value, 0)) for s in TimerStatus}, False

    def due_backlog(self) -> int:
        """Pending timers already due by the database's clock (not yet claimed), counted on the
        pending index up to BACKLOG_CAP."""
        with self._statement() as conn:
            return int(conn.execute(DUE_BACKLOG).scalar_one())

    def lateness(self) -> list[LatenessMinute]:
        """Per minute of the last LATENESS_MINUTES, the lateness (started_at − execute_at) of
        the last attempt of the timers that finished (completed or failed) then, from at most
        the newest LATENESS_SAMPLE of each status on the finished index."""
        with self._statement() as conn:
            rows = conn.execute(
                LATENESS, {"minutes": LATENESS_MINUTES, "sample": LATENESS_SAMPLE}
            ).all()
        return [LatenessMinute(r.minute, int(r.count), r.p50, r.p99, r.max) for r in rows]

    def purge_finished(
        self, older_than: float, limit: int, at: PurgePosition | None = None
    ) -> Purged | None:
        """One statement: under a transaction-scoped advisory lock (so one purge runs at a
        time), look at the next `limit` finished timers after `at` (status by status, then by
        updated_at and id: index ix_timers_finished_updated_at) and delete those still finished
        and old enough. Each batch starts where the last one ended, so it never walks again over
        the index entries of rows already deleted; a batch that finds fewer than `limit` rows
        ends the pass. The DELETE states the condition again, and PostgreSQL re-checks it on a
        row another transaction changed meanwhile, so a timer redriven between the two stays (no
        row lock is taken first: that would write every doomed row twice); a row locked for more
        than PURGE_LOCK_TIMEOUT seconds fails the batch with StoreUnavailable. None when another
        purge holds the lock."""
        start = FINISHED.index(at.status) if at else 0
        with self._statement() as conn:
            row = conn.execute(
                PURGE,
                {
                    "lock": PURGE_LOCK,
                    "age": older_than,
                    "limit": limit,
                    "lock_timeout": f"{PURGE_LOCK_TIMEOUT * 1000:.0f}ms",
                    "statuses": [status.value for status in FINISHED[start:]],
                    "after_at": at.updated_at if at else "-infinity",
                    "after_id": str(at.id if at else _NIL),
                    "nil": str(_NIL),
                },
            ).one()
        if not row.held:
            return None
        more = row.seen >= limit  # a full batch: the pass goes on after its last row
        return Purged(
            int(row.deleted),
            PurgePosition(TimerStatus(row.last_status), row.last_at, row.last_id) if more else None,
        )
