"""The twin of `timers.store.schedules`: schedules as rows in a dict, and the occurrences they make
in the twin's table of timers. Which slots to make, and their rows, come from the same rules as
PostgreSQL's (`timers.storage.occurrences`, `timers.schedules.plan`); only the queries are
re-implemented here."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from timers.models import Timer, TimerStatus, uuid7
from timers.schedules.model import Schedule, ScheduleSpec
from timers.schedules.plan import Plan, plan
from timers.storage import (
    SCHEDULES_PER_LOAD,
    ScheduleCounts,
    ScheduleNameTaken,
    ScheduleNotFound,
    ToppedUp,
)
from timers.storage.occurrences import made_until_at_creation, planned_rows, triggered_row
from timers.testing.table import TimerTable, is_live


class InMemorySchedules:
    """The `ScheduleStore` protocol on the twin's table (`InMemoryStore.schedules`): each method
    one operation under the table's lock, as each PostgreSQL transaction is one."""

    def __init__(self, table: TimerTable) -> None:
        self.table = table

    # -- the API's ---------------------------------------------------------------------------

    def create(self, spec: ScheduleSpec) -> Schedule:
        with self.table._operation() as now:
            self._check_name(spec.owner, spec.name)
            row = spec.columns() | {
                "id": uuid7(),
                "created_at": now,
                "updated_at": now,
                "materialized_until": made_until_at_creation(spec.timing.start_at, now),
                "skipped": 0,
            }
            self.table._schedules[row["id"]] = row
            if not spec.paused:
                self._top_up_one(row, now)
            return Schedule.from_row(row)

    def get(self, schedule_id: uuid.UUID, owner: str | None = None) -> Schedule:
        with self.table._operation():
            return Schedule.from_row(self._row(schedule_id, owner))

    def _row(self, schedule_id: uuid.UUID, owner: str | None) -> dict[str, Any]:
        row = self.table._schedules.get(schedule_id)
        if row is None or owner not in (None, row["owner"]):
            raise ScheduleNotFound(schedule_id)
        return row

    def _check_name(
        self, owner: str, name: str | None, other_than: uuid.UUID | None = None
    ) -> None:
        """The unique index on (owner, name), where a name is given."""
        if name is not None and any(
            row["owner"] == owner and row["name"] == name and row["id"] != other_than
            for row in self.table._schedules.values()
        ):
            raise ScheduleNameTaken(name)

    def page(
        self,
        owner: str | None,
        *,
        name: str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: uuid.UUID | None = None,
    ) -> tuple[list[Schedule], uuid.UUID | None]:
        with self.table._operation():
            rows = sorted(
                (
                    row
                    for row in self.table._schedules.values()
                    if owner in (None, row["owner"])
                    and name in (None, row["name"])
                    and (after is None or row["id"] > after)
                ),
                key=lambda row: row["id"],
            )[offset : offset + limit + 1]
            found = [Schedule.from_row(row) for row in rows[:limit]]
        return found, (found[-1].id if len(rows) > limit else None)

    def replace(self, schedule_id: uuid.UUID, spec: ScheduleSpec, owner: str | None) -> Schedule:
        with self.table._operation() as now:
            row = self._row(schedule_id, owner)
            self._check_name(row["owner"], spec.name, other_than=schedule_id)
            values = {k: v for k, v in spec.columns().items() if k != "owner"}
            self._drop_pending(schedule_id)
            return self._remake(row, values, now)

    def set_paused(self, schedule_id: uuid.UUID, paused: bool, owner: str | None) -> Schedule:
        with self.table._operation() as now:
            row = self._row(schedule_id, owner)
            if row["paused"] == paused:
                return Schedule.from_row(row)
            self._drop_pending(schedule_id)
            return self._remake(row, {"paused": paused}, now)

    def _drop_pending(self, schedule_id: uuid.UUID) -> None:
        for timer in self._pending_occurrences(schedule_id):
            self.table._delete(timer)

    def _pending_occurrences(self, schedule_id: uuid.UUID) -> list[Timer]:
        return [
            t
            for t in self.table._timers.values()
            if t.schedule_id == schedule_id and t.status is TimerStatus.PENDING
        ]

    def _remake(self, row: dict[str, Any], values: dict[str, Any], now: datetime) -> Schedule:
        row.update(values, updated_at=now, materialized_until=now)
        if not row["paused"]:
            self._top_up_one(row, now)
        return Schedule.from_row(row)

    def delete(self, schedule_id: uuid.UUID, owner: str | None) -> int:
        with self.table._operation() as now:
            self._row(schedule_id, owner)
            del self.table._schedules[schedule_id]
            pending = self._pending_occurrences(schedule_id)
            for timer in pending:
                self.table._update(timer, now, status=TimerStatus.CANCELED)
            return len(pending)

    def trigger(self, schedule_id: uuid.UUID, owner: str | None) -> Timer:
        with self.table._operation() as now:
            schedule = Schedule.from_row(self._row(schedule_id, owner))
            made = self.table._insert_occurrence(
                triggered_row(schedule, now), now, on_conflict_skip=False
            )
            assert made is not None
            return made

    def occurrences(self, schedule_id: uuid.UUID, limit: int = 10) -> list[Timer]:
        with self.table._operation():
            mine = [t for t in self.table._timers.values() if t.schedule_id == schedule_id]
        mine.sort(key=lambda t: t.scheduled_for or t.execute_at, reverse=True)
        return mine[:limit]

    # -- the scheduler's ---------------------------------------------------------------------

    def counts(self) -> ScheduleCounts:
        with self.table._operation() as now:
            rows = list(self.table._schedules.values())
        paused = sum(1 for r in rows if r["paused"])
        ended = sum(
            1 for r in rows if not r["paused"] and r["end_at"] is not None and r["end_at"] <= now
        )
        return ScheduleCounts(
            active=len(rows) - paused - ended,
            paused=paused,
            ended=ended,
            skipped=sum(r["skipped"] for r in rows),
        )

    def top_up(
        self, schedule_ids: Sequence[uuid.UUID] | None = None, lookahead: float = 60.0
    ) -> ToppedUp:
        with self.table._operation() as now:
            live = [row for row in self.table._schedules.values() if is_live(row)]
            if schedule_ids is None:
                horizon = now + timedelta(seconds=lookahead)
                live = [row for row in live if row["materialized_until"] <= horizon]
            else:
                wanted = set(schedule_ids)
                live = [row for row in live if row["id"] in wanted]
            live.sort(key=lambda row: row["materialized_until"])
            made = skipped = 0
            for row in live[:SCHEDULES_PER_LOAD]:
                done = self._top_up_one(row, now)
                made += len(done.occurrences)
                skipped += done.skipped
        return ToppedUp(made=made, skipped=skipped, schedules=min(len(live), SCHEDULES_PER_LOAD))

    def _top_up_one(self, row: dict[str, Any], now: datetime) -> Plan:
        schedule = Schedule.from_row(row)
        planned = plan(schedule, now)
        for occurrence in planned_rows(schedule, planned):
            self.table._insert_occurrence(occurrence, now)
        row["materialized_until"] = max(row["materialized_until"], planned.materialized_until)
        row["skipped"] += planned.skipped
        return planned
