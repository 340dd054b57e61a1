"""The scheduler's statements on the PostgreSQL store (`SchedulerStore`): what is due soon,
claims, releases, recovery and the `skip` misfire policy."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Text, literal, select, union_all

from timers.models import Claimed, Claims, DueTime
from timers.schema import timers
from timers.storage import Claim, NearTerm, Recovered, RecoveryRules
from timers.store.connection import Connected
from timers.store.lifecycle import (
    CLAIM_DUE,
    PENDING_BY_IDS,
    RELEASE,
    claims_params,
    fail_missed_statement,
    near_term_query,
    recover_statement,
    schedules_to_top_up,
)
from timers.store.notifications import NotificationFeed

# What marks a load's row as a schedule to top up (a recovered timer's mark is its reason, one of
# storage's LOST_CLAIM and LOST_DELIVERY).
SCHEDULE_DUE = "schedule: its next slots are due"


class SchedulerStatements(Connected):
    def load_near_term(
        self,
        start: datetime | None,
        end: datetime,
        limit: int = 100_000,
        recovery: RecoveryRules | None = None,
        schedules_within: float | None = None,
    ) -> NearTerm:
        """The id and `execute_at` of the `pending` timers with `start <= execute_at <= end` (no
        lower bound when `start` is None), earliest first, at most `limit` of them; served by the
        partial index. Only two columns: a large window loads fast.

        With `recovery`, the same statement first puts back to `pending` the `executing` timers
        that `recovery` finds stranded (see `RecoveryRules`); they are returned too (they are due),
        with the reason also written to their `last_error`. With `schedules_within`, the same
        statement also finds the live schedules whose next slots are to be made (at most
        SCHEDULES_PER_LOAD). One statement in every case, so an idle scheduler costs the database
        one statement per load.
        """
        near = near_term_query(start, end, limit)
        if recovery is None and schedules_within is None:
            with self._statement() as conn:
                rows = conn.execute(near)
                return NearTerm([DueTime(row[0], row[1]) for row in rows], [])
        loaded = near.add_columns(literal(None, Text()).label("reason")).subquery("near")
        branches = [select(loaded.c.id, loaded.c.execute_at, loaded.c.reason)]
        if recovery is not None:
            recovered = (
                recover_statement(recovery)
                .returning(timers.c.id, timers.c.execute_at, timers.c.last_error)
                .cte("recovered")
            )
            branches.append(select(recovered.c.id, recovered.c.execute_at, recovered.c.last_error))
        if schedules_within is not None:
            branches.append(schedules_to_top_up(schedules_within, SCHEDULE_DUE))
        with self._statement() as conn:
            rows = conn.execute(union_all(*branches)).all()
        loaded_timers = [DueTime(row[0], row[1]) for row in rows if row[2] is None]
        recovered_timers = [
            Recovered(row[0], row[1], row[2])
            for row in rows
            if row[2] is not None and row[2] != SCHEDULE_DUE
        ]
        return NearTerm(
            loaded_timers + [DueTime(r.id, r.execute_at) for r in recovered_timers],
            recovered_timers,
            [row[0] for row in rows if row[2] == SCHEDULE_DUE],
        )

    def pending_by_ids(self, timer_ids: Iterable[uuid.UUID]) -> list[DueTime]:
        """The id and `execute_at` of those of `timer_ids` that are `pending` now (any
        `execute_at`); no other column."""
        ids = list(timer_ids)
        if not ids:
            return []
        with self._statement() as conn:
            rows = conn.execute(PENDING_BY_IDS, {"ids": ids}).all()
        return [DueTime(row[0], row[1]) for row in rows]

    def changes(self) -> NotificationFeed:
        """A feed of the timers that became pending, changed while pending, or were canceled."""
        return NotificationFeed(self.engine)

    def claim_due(self, timer_ids: Sequence[uuid.UUID]) -> list[Claimed]:
        """Flip to `executing` those of `timer_ids` that are still `pending` and due by the
        database's clock, in one statement; return exactly the rows it flipped, each as its id,
        new claim number (`claims` + 1; the `attempts` column) and `execute_at` (no JSON column is read back).

        A timer canceled, postponed or claimed by another scheduler since it was cached is not
        touched, so only the returned timers may be enqueued. Nor is one that another transaction
        holds right now (an API change or bulk cancel, another scheduler's claim): a claim never
        waits for a lock, and the caller re-reads the timers it did not get. The occurrences it
        skipped instead (queries.sql, `claim_due`) are not returned; their schedules are, as
        `skipped_schedules`.
        """
        if not timer_ids:
            return Claims()
        with self._statement() as conn:
            rows = conn.execute(CLAIM_DUE, {"ids": list(timer_ids)}).all()
        return Claims(
            [Claimed(row[0], row[1], row[2], row[3]) for row in rows if row[4]],
            [row[3] for row in rows if not row[4]],
        )

    def release(self, claims: Sequence[Claim]) -> int:
        """Put claimed timers whose message could not be enqueued back to `pending`.

        Touches only rows that are still `executing` under the same claim (id and claim number) and
        that no worker has started: a message that reached a worker after all is never undone.
        """
        if not claims:
            return 0
        with self._statement() as conn:
            return int(conn.execute(RELEASE, claims_params(claims)).rowcount)

    def fail_missed(self, recovery_window: float) -> int:
        """Mark `failed` the `pending` timers due more than `recovery_window` seconds ago, with a
        `last_error` starting `missed:` (the `skip` misfire policy)."""
        with self._statement() as conn:
            return int(conn.execute(fail_missed_statement(recovery_window)).rowcount)
