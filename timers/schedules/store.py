"""Every query on `schedules`, and the occurrences (timers) a schedule makes. One transaction per
method; "now" is the database's `now()`, the clock every process compares against."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Float, bindparam, func, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError

from timers.metrics import ScheduleCounts
from timers.models import Timer, TimerStatus, uuid7
from timers.schedules.model import Schedule, ScheduleSpec
from timers.schedules.plan import Plan, plan
from timers.schema import schedules, timers
from timers.storage import StoreError
from timers.store import database_errors

log = logging.getLogger(__name__)

PENDING = TimerStatus.PENDING.value
_TINY = timedelta(microseconds=1)
_NOW_GRACE = timedelta(seconds=1)  # a start_at this close before now is "now"


class ScheduleNotFound(StoreError):
    def __init__(self, schedule_id: uuid.UUID) -> None:
        super().__init__(f"schedule {schedule_id} not found")
        self.schedule_id = schedule_id


class ScheduleNameTaken(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"name: {name!r} is taken by another schedule of this key")
        self.name = name


@dataclass(frozen=True)
class ToppedUp:
    """What a top-up did: occurrences made, missed slots skipped, schedules looked at."""

    made: int = 0
    skipped: int = 0
    schedules: int = 0


def _owned(owner: str | None) -> list[Any]:
    return [] if owner is None else [schedules.c.owner == owner]


# The pending occurrences of a schedule, as the changes that re-make them remove them: deleted
# (never fired, nothing to keep), so their slots can be made again under the new config.
_DROP_PENDING = text(
    "DELETE FROM timers WHERE schedule_id = :sid AND status = 'pending'"
).bindparams(bindparam("sid", type_=UUID(as_uuid=True)))


class ScheduleStore:
    """Schedules and the occurrences they make, on PostgreSQL (the engine of `TimerStore`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with database_errors(), self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            except BaseException:
                with suppress(Exception):
                    conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    # -- API ---------------------------------------------------------------------------------

    def create(self, spec: ScheduleSpec) -> Schedule:
        """Insert a schedule with a fresh UUIDv7 id and, in the same transaction, its first
        occurrences (none when paused). Its first slot is the first at or after both `start_at`
        and a second before now (a start of "now" by another host's clock fires at once): nothing
        before its creation is caught up. A name taken by the owner raises ScheduleNameTaken."""
        values = {**spec.columns(), "id": uuid7()}
        try:
            with self._transaction() as conn:
                now = conn.execute(select(func.now())).scalar_one()
                start = spec.timing.start_at
                values["materialized_until"] = max(start, now - _NOW_GRACE) - _TINY
                row = conn.execute(schedules.insert().values(**values).returning(schedules))
                schedule = Schedule.from_row(row.mappings().one())
                if not spec.paused:
                    self._top_up_one(conn, schedule, now)
                return self._get(conn, schedule.id, None)
        except IntegrityError:
            raise ScheduleNameTaken(spec.name or "") from None
        except StoreError as exc:
            if "ux_schedules_owner_name" in str(exc):
                raise ScheduleNameTaken(spec.name or "") from None
            raise

    def get(self, schedule_id: uuid.UUID, owner: str | None = None) -> Schedule:
        """The schedule, if `owner` (None: any) has it; else ScheduleNotFound."""
        with self._transaction() as conn:
            return self._get(conn, schedule_id, owner)

    def _get(
        self, conn: Any, schedule_id: uuid.UUID, owner: str | None, lock: bool = False
    ) -> Schedule:
        query = select(schedules).where(schedules.c.id == schedule_id, *_owned(owner))
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
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
        with self._transaction() as conn:
            rows = conn.execute(query).mappings().all()
        found = [Schedule.from_row(r) for r in rows[:limit]]
        return found, (found[-1].id if len(rows) > limit else None)

    def replace(self, schedule_id: uuid.UUID, spec: ScheduleSpec, owner: str | None) -> Schedule:
        """Give the schedule a new spec from its next unfired slot: its pending occurrences are
        deleted and the slots after now made again under the new spec (an occurrence executing
        goes on). The owner stays the schedule's."""
        values = {k: v for k, v in spec.columns().items() if k != "owner"}
        try:
            with self._transaction() as conn:
                self._get(conn, schedule_id, owner, lock=True)
                conn.execute(_DROP_PENDING, {"sid": schedule_id})
                return self._remake(conn, schedule_id, values)
        except StoreError as exc:
            if "ux_schedules_owner_name" in str(exc):
                raise ScheduleNameTaken(spec.name or "") from None
            raise

    def set_paused(self, schedule_id: uuid.UUID, paused: bool, owner: str | None) -> Schedule:
        """Pause (its pending occurrences deleted: none fires) or resume (slots after now made
        again; those missed while paused are not)."""
        with self._transaction() as conn:
            current = self._get(conn, schedule_id, owner, lock=True)
            if current.spec.paused == paused:
                return current
            conn.execute(_DROP_PENDING, {"sid": schedule_id})
            return self._remake(conn, schedule_id, {"paused": paused})

    def _remake(self, conn: Any, schedule_id: uuid.UUID, values: dict[str, Any]) -> Schedule:
        now = conn.execute(select(func.now())).scalar_one()
        row = conn.execute(
            schedules.update()
            .where(schedules.c.id == schedule_id)
            .values(**values, updated_at=func.now(), materialized_until=now)
            .returning(schedules)
        )
        schedule = Schedule.from_row(row.mappings().one())
        if not schedule.spec.paused:
            self._top_up_one(conn, schedule, now)
        return self._get(conn, schedule_id, None)

    def delete(self, schedule_id: uuid.UUID, owner: str | None) -> int:
        """Delete the schedule and cancel its pending occurrences (its history stays, by
        `schedule_id`); returns how many were canceled."""
        with self._transaction() as conn:
            self._get(conn, schedule_id, owner, lock=True)
            conn.execute(schedules.delete().where(schedules.c.id == schedule_id))
            canceled = conn.execute(
                timers.update()
                .where(timers.c.schedule_id == schedule_id, timers.c.status == PENDING)
                .values(status=TimerStatus.CANCELED.value, updated_at=func.now())
            )
            return int(canceled.rowcount)

    def trigger(self, schedule_id: uuid.UUID, owner: str | None) -> Timer:
        """One extra occurrence, due now, with `scheduled_for` now (never a slot's twin)."""
        with self._transaction() as conn:
            schedule = self._get(conn, schedule_id, owner)
            now = conn.execute(select(func.now())).scalar_one()
            row = conn.execute(
                timers.insert()
                .values(**_occurrence_values(schedule, now, now, None))
                .returning(timers)
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
        with self._transaction() as conn:
            return [Timer.from_row(r) for r in conn.execute(query).mappings().all()]

    # -- scheduler ---------------------------------------------------------------------------

    def counts(self) -> ScheduleCounts:
        """Every schedule by state (paused; ended: its `end_at` passed; else active) and the sum
        of their `skipped`, in one statement over `schedules` (no occurrence is read)."""
        ended = (
            ~schedules.c.paused
            & schedules.c.end_at.is_not(None)
            & (schedules.c.end_at <= func.now())
        )
        query = select(
            func.count().filter(schedules.c.paused),
            func.count().filter(ended),
            func.count(),
            func.coalesce(func.sum(schedules.c.skipped), 0),
        )
        with self._transaction() as conn:
            paused, done, total, skipped = conn.execute(query).one()
        return ScheduleCounts(
            active=total - paused - done, paused=paused, ended=done, skipped=int(skipped)
        )

    def top_up(
        self, schedule_ids: Sequence[uuid.UUID] | None = None, lookahead: float = 60.0
    ) -> ToppedUp:
        """Make the next slots of the given schedules (None: of every schedule whose latest slot
        made is due within `lookahead` seconds), not paused and not ended, in one transaction:
        each schedule row is locked (`SKIP LOCKED`: one another process is topping up is left to
        it), its occurrences inserted with `ON CONFLICT DO NOTHING` on (schedule, slot), and
        `materialized_until` advanced (`GREATEST`)."""
        live = [
            ~schedules.c.paused,
            or_(schedules.c.end_at.is_(None), schedules.c.materialized_until < schedules.c.end_at),
        ]
        query = select(schedules).where(*live)
        if schedule_ids is None:
            horizon = func.now() + func.make_interval(
                0, 0, 0, 0, 0, 0, bindparam("lookahead", lookahead, type_=Float())
            )
            query = query.where(schedules.c.materialized_until <= horizon)
        else:
            ids = bindparam("ids", list(schedule_ids), type_=ARRAY(UUID(as_uuid=True)))
            query = query.where(schedules.c.id == func.any(ids))
        query = query.order_by(schedules.c.materialized_until).limit(1000)
        query = query.with_for_update(skip_locked=True)
        made = skipped = 0
        with self._transaction() as conn:
            now = conn.execute(select(func.now())).scalar_one()
            rows = conn.execute(query).mappings().all()
            for row in rows:
                done = self._top_up_one(conn, Schedule.from_row(row), now)
                made += len(done.occurrences)
                skipped += done.skipped
        return ToppedUp(made=made, skipped=skipped, schedules=len(rows))

    def _top_up_one(self, conn: Any, schedule: Schedule, now: datetime) -> Plan:
        planned = plan(schedule, now)
        if planned.occurrences:
            rows = [
                _occurrence_values(schedule, o.scheduled_for, o.execute_at, o.late_limit)
                for o in planned.occurrences
            ]
            conn.execute(
                pg_insert(timers)
                .values(rows)
                .on_conflict_do_nothing(
                    index_elements=["schedule_id", "scheduled_for"],
                    index_where=timers.c.schedule_id.is_not(None),
                )
            )
        conn.execute(
            schedules.update()
            .where(schedules.c.id == schedule.id)
            .values(
                materialized_until=func.greatest(
                    schedules.c.materialized_until, planned.materialized_until
                ),
                skipped=schedules.c.skipped + planned.skipped,
            )
        )
        return planned


def _occurrence_values(
    schedule: Schedule, slot: datetime, execute_at: datetime, limit: float | None
) -> dict[str, Any]:
    spec = schedule.spec
    return {
        "id": uuid7(),
        "execute_at": execute_at,
        "callback_type": spec.callback_type,
        "callback_config": dict(spec.callback_config),
        "metadata": None if spec.metadata is None else dict(spec.metadata),
        "retry": None if spec.retry is None else dict(spec.retry),
        "owner": spec.owner,
        "status": PENDING,
        "schedule_id": schedule.id,
        "scheduled_for": slot,
        "late_limit": limit,
        "skip_if_running": spec.overlap == "skip",
    }
