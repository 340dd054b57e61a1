"""Schedules on the PostgreSQL store (`ScheduleStore`): every query on `schedules`, and the
occurrences (timers) a schedule makes. One transaction per method; "now" is the database's
`now()`, the clock every process compares against. Which slots become occurrences, and the rows
they become, is `timers.storage.occurrences` (shared with the in-memory twin)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from timers.models import Timer, TimerStatus, uuid7
from timers.schedules.model import Schedule, ScheduleSpec
from timers.schedules.plan import plan
from timers.schema import schedules, timers
from timers.storage import (
    SCHEDULES_PER_LOAD,
    ScheduleCounts,
    ScheduleNameTaken,
    ScheduleNotFound,
    StoreError,
    ToppedUp,
)
from timers.storage.occurrences import made_until_at_creation, planned_rows, triggered_row
from timers.store.connection import Connected, new_timer_arrays, seconds
from timers.store.lifecycle import LIVE_SCHEDULE
from timers.store.sql import queries

PENDING = TimerStatus.PENDING.value
NAME_INDEX = "ux_schedules_owner_name"  # (owner, name), unique where a name is given

NOW = select(func.now())
INSERT_OCCURRENCES = text(queries["insert_occurrences"])
ADVANCE = text(queries["advance_schedules"])
DROP_PENDING = text(queries["drop_pending_occurrences"]).bindparams(
    bindparam("sid", type_=UUID(as_uuid=True))
)
CANCEL_PENDING = (
    timers.update()
    .where(timers.c.schedule_id == bindparam("sid"), timers.c.status == PENDING)
    .values(status=TimerStatus.CANCELED.value, updated_at=func.now())
)
DELETE = schedules.delete().where(schedules.c.id == bindparam("sid"))
_ENDED = ~schedules.c.paused & schedules.c.end_at.is_not(None) & (schedules.c.end_at <= func.now())
COUNTS = select(
    func.count().filter(schedules.c.paused),
    func.count().filter(_ENDED),
    func.count(),
    func.coalesce(func.sum(schedules.c.skipped), 0),
)


def _owned(owner: str | None) -> list[Any]:
    return [] if owner is None else [schedules.c.owner == owner]


def _by_id(schedule_id: uuid.UUID, owner: str | None, lock: bool = False) -> Any:
    query = select(schedules).where(schedules.c.id == schedule_id, *_owned(owner))
    return query.with_for_update() if lock else query


@contextmanager
def _unique_name(spec: ScheduleSpec) -> Iterator[None]:
    """A violation of the unique index on (owner, name) becomes ScheduleNameTaken."""
    try:
        yield
    except StoreError as exc:
        if NAME_INDEX in str(exc):
            raise ScheduleNameTaken(spec.name or "") from None
        raise


class ScheduleStatements(Connected):
    """Schedules and the occurrences they make, on the engine of `TimerStore` (its `schedules`)."""

    # -- the API's ---------------------------------------------------------------------------

    def create(self, spec: ScheduleSpec) -> Schedule:
        """Insert a schedule with a fresh UUIDv7 id and, in the same transaction, its first
        occurrences (none when paused); `materialized_until` from
        `occurrences.made_until_at_creation`. The unique index on (owner, name) raises
        ScheduleNameTaken."""
        with _unique_name(spec), self._transaction() as conn:
            now = conn.execute(NOW).scalar_one()
            values = {
                **spec.columns(),
                "id": uuid7(),
                "materialized_until": made_until_at_creation(spec.timing.start_at, now),
            }
            row = conn.execute(schedules.insert().values(**values).returning(schedules))
            schedule = Schedule.from_row(row.mappings().one())
            if not spec.paused:
                _make_slots(conn, [schedule], now)
            return self._get(conn, schedule.id, None)

    def get(self, schedule_id: uuid.UUID, owner: str | None = None) -> Schedule:
        """The schedule, if `owner` (None: any) has it; else ScheduleNotFound."""
        with self._statement() as conn:
            return self._get(conn, schedule_id, owner)

    @staticmethod
    def _get(conn: Any, schedule_id: uuid.UUID, owner: str | None, lock: bool = False) -> Schedule:
        row = conn.execute(_by_id(schedule_id, owner, lock)).mappings().first()
        if row is None:
            raise ScheduleNotFound(schedule_id)
        return Schedule.from_row(row)

    def page(
        self,
        owner: str | None,
        *,
        name: str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: uuid.UUID | None = None,
    ) -> tuple[list[Schedule], uuid.UUID | None]:
        """Schedules in creation order (UUIDv7 ids), `limit` of them after the id `after` (a
        cursor) or `offset`; and the cursor of the next page (None: the last)."""
        query = select(schedules).where(*_owned(owner))
        if name is not None:
            query = query.where(schedules.c.name == name)
        if after is not None:
            query = query.where(schedules.c.id > after)
        query = query.order_by(schedules.c.id).limit(limit + 1).offset(offset)
        with self._statement() as conn:
            rows = conn.execute(query).mappings().all()
        found = [Schedule.from_row(r) for r in rows[:limit]]
        return found, (found[-1].id if len(rows) > limit else None)

    def replace(self, schedule_id: uuid.UUID, spec: ScheduleSpec, owner: str | None) -> Schedule:
        """Lock the schedule, delete its pending occurrences (`drop_pending_occurrences`) and
        update its spec (not its owner), `materialized_until` now: its slots after now are made
        again under the new spec (an occurrence executing goes on)."""
        values = {k: v for k, v in spec.columns().items() if k != "owner"}
        with _unique_name(spec), self._transaction() as conn:
            self._get(conn, schedule_id, owner, lock=True)
            conn.execute(DROP_PENDING, {"sid": schedule_id})
            return self._remake(conn, schedule_id, values)

    def set_paused(self, schedule_id: uuid.UUID, paused: bool, owner: str | None) -> Schedule:
        """Pause (its pending occurrences deleted: none fires) or resume (slots after now made
        again; those missed while paused are not)."""
        with self._transaction() as conn:
            current = self._get(conn, schedule_id, owner, lock=True)
            if current.spec.paused == paused:
                return current
            conn.execute(DROP_PENDING, {"sid": schedule_id})
            return self._remake(conn, schedule_id, {"paused": paused})

    def _remake(self, conn: Any, schedule_id: uuid.UUID, values: dict[str, Any]) -> Schedule:
        now = conn.execute(NOW).scalar_one()
        row = conn.execute(
            schedules.update()
            .where(schedules.c.id == schedule_id)
            .values(**values, updated_at=func.now(), materialized_until=now)
            .returning(schedules)
        )
        schedule = Schedule.from_row(row.mappings().one())
        if not schedule.spec.paused:
            _make_slots(conn, [schedule], now)
        return self._get(conn, schedule_id, None)

    def delete(self, schedule_id: uuid.UUID, owner: str | None) -> int:
        """Delete the schedule and cancel its pending occurrences (its history stays, by
        `schedule_id`); returns how many were canceled."""
        with self._transaction() as conn:
            self._get(conn, schedule_id, owner, lock=True)
            conn.execute(DELETE, {"sid": schedule_id})
            return int(conn.execute(CANCEL_PENDING, {"sid": schedule_id}).rowcount)

    def trigger(self, schedule_id: uuid.UUID, owner: str | None) -> Timer:
        """Insert one extra occurrence (`occurrences.triggered_row`), due now."""
        with self._transaction() as conn:
            schedule = self._get(conn, schedule_id, owner)
            now = conn.execute(NOW).scalar_one()
            row = conn.execute(
                timers.insert().values(**triggered_row(schedule, now)).returning(timers)
            )
            return Timer.from_row(row.mappings().one())

    def occurrences(self, schedule_id: uuid.UUID, limit: int = 10) -> list[Timer]:
        """The schedule's latest occurrences, latest slot first."""
        query = (
            select(timers)
            .where(timers.c.schedule_id == schedule_id)
            .order_by(timers.c.scheduled_for.desc())
            .limit(limit)
        )
        with self._statement() as conn:
            return [Timer.from_row(r) for r in conn.execute(query).mappings().all()]

    # -- the scheduler's ---------------------------------------------------------------------

    def counts(self) -> ScheduleCounts:
        """Every schedule by state and the sum of their `skipped`, in one statement over
        `schedules` (no occurrence is read)."""
        with self._statement() as conn:
            paused, ended, total, skipped = conn.execute(COUNTS).one()
        return ScheduleCounts(
            active=total - paused - ended, paused=paused, ended=ended, skipped=int(skipped)
        )

    def top_up(
        self, schedule_ids: Sequence[uuid.UUID] | None = None, lookahead: float = 60.0
    ) -> ToppedUp:
        """Make the next slots of the given schedules (None: of every schedule whose latest slot
        made is due within `lookahead` seconds), live ones only, in one transaction: each schedule
        row is locked (`SKIP LOCKED`: one another process is topping up is left to it), its
        occurrences inserted with `ON CONFLICT DO NOTHING` on (schedule, slot), and
        `materialized_until` advanced (`GREATEST`)."""
        query = select(schedules).where(*LIVE_SCHEDULE)
        if schedule_ids is None:
            query = query.where(schedules.c.materialized_until <= func.now() + seconds(lookahead))
        else:
            ids = bindparam("ids", list(schedule_ids), type_=ARRAY(UUID(as_uuid=True)))
            query = query.where(schedules.c.id == func.any(ids))
        query = query.order_by(schedules.c.materialized_until).limit(SCHEDULES_PER_LOAD)
        query = query.with_for_update(skip_locked=True)
        with self._transaction() as conn:
            now = conn.execute(NOW).scalar_one()
            rows = conn.execute(query).mappings().all()
            made, skipped = _make_slots(conn, [Schedule.from_row(row) for row in rows], now)
        return ToppedUp(made=made, skipped=skipped, schedules=len(rows))


def _make_slots(conn: Any, made_for: Sequence[Schedule], now: datetime) -> tuple[int, int]:
    """Insert the occurrences `plan` makes for these schedules at `now` and advance their
    `materialized_until`, two statements whatever their number; (occurrences made, slots
    skipped)."""
    if not made_for:
        return 0, 0
    planned = [(schedule, plan(schedule, now)) for schedule in made_for]
    rows = [row for schedule, p in planned for row in planned_rows(schedule, p)]
    if rows:
        conn.execute(
            INSERT_OCCURRENCES,
            {
                **new_timer_arrays(rows),
                "schedule_ids": [r["schedule_id"] for r in rows],
                "scheduled_fors": [r["scheduled_for"] for r in rows],
                "late_limits": [r["late_limit"] for r in rows],
                "skip_if_runnings": [r["skip_if_running"] for r in rows],
            },
        )
    conn.execute(
        ADVANCE,
        {
            "ids": [schedule.id for schedule, _ in planned],
            "untils": [p.materialized_until for _, p in planned],
            "skipped": [p.skipped for _, p in planned],
        },
    )
    return len(rows), sum(p.skipped for _, p in planned)
