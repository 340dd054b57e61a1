"""Every query and transaction on the `timers` table. Nothing else in the package writes SQL.

Each public method is one transaction: a method that runs a single statement runs it in autocommit
(a statement is atomic on its own), one that runs several wraps them in BEGIN/COMMIT. Docstrings say
exactly which rows a statement touches.
Times that several hosts compare (is a timer due?) come from the database's `now()`.
"""

from __future__ import annotations

import logging
import select as io_select
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from sqlalchemy import (
    Engine,
    Float,
    Integer,
    Text,
    any_,
    bindparam,
    case,
    column,
    create_engine,
    func,
    select,
    text,
    values,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.engine import make_url

from timers.models import DueTime, Timer, TimerStatus, uuid7
from timers.schema import timers

log = logging.getLogger(__name__)

SORT_COLUMNS = ("created_at", "execute_at")
SORT_ORDERS = ("asc", "desc")
MAX_ERROR_LENGTH = 500


class TimerNotFound(LookupError):
    def __init__(self, timer_id: uuid.UUID) -> None:
        super().__init__(f"timer {timer_id} not found")
        self.timer_id = timer_id


class TimerNotPending(ValueError):
    """The timer exists but is no longer `pending`, so it can't be changed or canceled."""

    def __init__(self, timer_id: uuid.UUID, status: TimerStatus) -> None:
        super().__init__(f"timer {timer_id} is {status.value}; only pending timers can be changed")
        self.timer_id = timer_id
        self.status = status


@dataclass(frozen=True)
class NewTimer:
    execute_at: datetime
    callback_type: str
    callback_config: Mapping[str, Any]
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TimerPage:
    timers: list[Timer]
    total: int


def database_engine(url: str, **kwargs: Any) -> Engine:
    """An engine on psycopg2 for a user's `postgresql://` URL (SQLAlchemy 2.1 would pick psycopg 3).

    Its connections are in autocommit: a single statement is its own transaction with no BEGIN and
    COMMIT round trips; `TimerStore` opens an explicit transaction where it runs several.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("isolation_level", "AUTOCOMMIT")
    kwargs.setdefault("connect_args", {"connect_timeout": 5})
    return create_engine(parsed, **kwargs)


def near_term_query(start: datetime | None, end: datetime, limit: int) -> Any:
    """The loader's query (see `TimerStore.load_near_term`)."""
    conditions = [timers.c.status == TimerStatus.PENDING.value, timers.c.execute_at <= end]
    if start is not None:
        conditions.append(timers.c.execute_at >= start)
    return (
        select(timers.c.id, timers.c.execute_at)
        .where(*conditions)
        .order_by(timers.c.execute_at)
        .limit(limit)
    )


def _not_being_delivered(lease: float) -> Any:
    """No delivery of the row started, or the last one started more than `lease` seconds ago."""
    return timers.c.started_at.is_(None) | (timers.c.started_at < func.now() - _seconds(lease))


def _seconds(value: float) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, bindparam(None, value, type_=Float()))


def _claims_table(claims: Sequence[tuple[uuid.UUID, int]]) -> Any:
    return values(
        column("id", UUID(as_uuid=True)), column("attempt", Integer()), name="claim"
    ).data(list(claims))


def _id_array(timer_ids: Iterable[uuid.UUID]) -> Any:
    return bindparam("ids", value=list(timer_ids), type_=ARRAY(UUID(as_uuid=True)))


def describe_database_error(exc: BaseException) -> str:
    """The driver's message for a database error, on one line."""
    reason = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    return " ".join(lines) or type(reason).__name__


class TimerStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _statement(self) -> Any:
        """A connection for a method that runs one statement: the engine's autocommit makes the
        statement its own transaction."""
        return self.engine.connect()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A connection inside BEGIN … COMMIT, for a method that runs several statements."""
        with self.engine.connect() as conn:
            # The dialect's own BEGIN: under autocommit, SQLAlchemy would not send one.
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            except BaseException:
                with suppress(Exception):  # the connection may be gone: keep the first error
                    conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    # -- API ---------------------------------------------------------------------------------

    def create(self, new: NewTimer) -> Timer:
        """Insert one `pending` timer with a fresh UUIDv7 id."""
        stmt = (
            timers.insert()
            .values(
                id=uuid7(),
                execute_at=new.execute_at,
                callback_type=new.callback_type,
                callback_config=dict(new.callback_config),
                metadata=None if new.metadata is None else dict(new.metadata),
                status=TimerStatus.PENDING.value,
            )
            .returning(*timers.c)
        )
        with self._statement() as conn:
            row = conn.execute(stmt).mappings().one()
        return Timer.from_row(row)

    def find(self, timer_id: uuid.UUID) -> Timer | None:
        """The timer with this id, or None."""
        with self._statement() as conn:
            row = conn.execute(select(timers).where(timers.c.id == timer_id)).mappings().first()
        return None if row is None else Timer.from_row(row)

    def create_many(self, batch: Sequence[NewTimer]) -> list[Timer]:
        """Insert `pending` timers with fresh UUIDv7 ids, all or none, in one statement."""
        if not batch:
            return []
        rows = [
            {
                "id": uuid7(),
                "execute_at": new.execute_at,
                "callback_type": new.callback_type,
                "callback_config": dict(new.callback_config),
                "metadata": None if new.metadata is None else dict(new.metadata),
                "status": TimerStatus.PENDING.value,
            }
            for new in batch
        ]
        with self._transaction() as conn:
            result = conn.execute(
                timers.insert().returning(*timers.c, sort_by_parameter_order=True), rows
            )
            return [Timer.from_row(r) for r in result.mappings().all()]

    def get(self, timer_id: uuid.UUID) -> Timer:
        """Read the timer with this id; raise TimerNotFound."""
        with self._statement() as conn:
            row = conn.execute(select(timers).where(timers.c.id == timer_id)).mappings().first()
        if row is None:
            raise TimerNotFound(timer_id)
        return Timer.from_row(row)

    def page(
        self,
        *,
        status: TimerStatus | None = None,
        limit: int = 50,
        offset: int = 0,
        sort: str = "created_at",
        order: str = "desc",
    ) -> TimerPage:
        """A page of timers (optionally of one status) and the total count matching the filter."""
        if sort not in SORT_COLUMNS or order not in SORT_ORDERS:
            raise ValueError(f"bad sort {sort!r} / order {order!r}")
        column = timers.c[sort]
        ordering = column.asc() if order == "asc" else column.desc()
        tiebreak = timers.c.id.asc() if order == "asc" else timers.c.id.desc()
        query = select(timers)
        count = select(func.count()).select_from(timers)
        if status is not None:
            query = query.where(timers.c.status == status.value)
            count = count.where(timers.c.status == status.value)
        query = query.order_by(ordering, tiebreak).limit(limit).offset(offset)
        with self._transaction() as conn:
            rows = conn.execute(query).mappings().all()
            total = conn.execute(count).scalar_one()
        return TimerPage(timers=[Timer.from_row(r) for r in rows], total=total)

    def update_pending(self, timer_id: uuid.UUID, changes: Mapping[str, Any]) -> Timer:
        """Apply `changes` to this timer only if it is still `pending`.

        Raises TimerNotFound, or TimerNotPending with the status it has.
        """
        allowed = {"execute_at", "callback_type", "callback_config", "metadata"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")
        return self._change_pending(timer_id, changes)

    def cancel(self, timer_id: uuid.UUID) -> Timer:
        """Flip this timer from `pending` to `canceled`; raise TimerNotFound or TimerNotPending."""
        return self._change_pending(timer_id, {"status": TimerStatus.CANCELED.value})

    def _change_pending(self, timer_id: uuid.UUID, values: Mapping[str, Any]) -> Timer:
        """Set `values` on this timer if it is `pending` (one UPDATE); else say why not."""
        stmt = (
            timers.update()
            .where(timers.c.id == timer_id, timers.c.status == TimerStatus.PENDING.value)
            .values(**values)
            .returning(*timers.c)
        )
        with self._transaction() as conn:
            row = conn.execute(stmt).mappings().first()
            if row is None:
                self._raise_missing_or_not_pending(conn, timer_id)
        return Timer.from_row(row)

    @staticmethod
    def _raise_missing_or_not_pending(conn: Any, timer_id: uuid.UUID) -> NoReturn:
        status = conn.execute(select(timers.c.status).where(timers.c.id == timer_id)).scalar()
        if status is None:
            raise TimerNotFound(timer_id)
        raise TimerNotPending(timer_id, TimerStatus(status))

    def ping(self) -> None:
        """Run `SELECT 1`; raises if the database can't be reached."""
        with self._statement() as conn:
            conn.execute(text("SELECT 1"))

    # -- scheduler ---------------------------------------------------------------------------

    def load_near_term(
        self, start: datetime | None, end: datetime, limit: int = 100_000
    ) -> list[DueTime]:
        """The id and `execute_at` of the `pending` timers with `start <= execute_at <= end` (no
        lower bound when `start` is None), earliest first, at most `limit` of them; served by the
        partial index. Only two columns: a large window loads fast."""
        with self._statement() as conn:
            rows = conn.execute(near_term_query(start, end, limit))
            return [DueTime(row[0], row[1]) for row in rows]

    def pending_by_ids(self, timer_ids: Iterable[uuid.UUID]) -> list[Timer]:
        """Those of `timer_ids` that are `pending` now (any `execute_at`)."""
        ids = list(timer_ids)
        if not ids:
            return []
        query = select(timers).where(
            timers.c.id == any_(_id_array(ids)), timers.c.status == TimerStatus.PENDING.value
        )
        with self._statement() as conn:
            rows = conn.execute(query).mappings().all()
        return [Timer.from_row(r) for r in rows]

    def changes(self) -> ChangeFeed:
        """A feed of the timers that became pending, changed while pending, or were canceled."""
        return ChangeFeed(self.engine)

    def claim_due(self, timer_ids: Sequence[uuid.UUID]) -> list[Timer]:
        """Flip to `executing` those of `timer_ids` that are still `pending` and due by the database's
        clock, in one statement; return exactly the rows it flipped.

        A timer canceled, postponed or claimed by another scheduler since it was cached is not
        touched, so only the returned timers may be enqueued.
        """
        if not timer_ids:
            return []
        stmt = (
            timers.update()
            .where(
                timers.c.id == any_(_id_array(timer_ids)),
                timers.c.status == TimerStatus.PENDING.value,
                timers.c.execute_at <= func.now(),
            )
            .values(
                status=TimerStatus.EXECUTING.value,
                claimed_at=func.now(),
                attempts=timers.c.attempts + 1,
            )
            .returning(*timers.c)
        )
        with self._statement() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [Timer.from_row(r) for r in rows]

    def release(self, timer_ids: Iterable[uuid.UUID]) -> int:
        """Put claimed timers that could not be enqueued back to `pending`.

        Touches only rows of `timer_ids` that are `executing` and not yet finished.
        """
        ids = list(timer_ids)
        if not ids:
            return 0
        stmt = (
            timers.update()
            .where(
                timers.c.id == any_(_id_array(ids)),
                timers.c.status == TimerStatus.EXECUTING.value,
            )
            .values(status=TimerStatus.PENDING.value, claimed_at=None)
        )
        with self._statement() as conn:
            return conn.execute(stmt).rowcount

    # -- worker ------------------------------------------------------------------------------

    def begin_delivery(
        self, timer_id: uuid.UUID, attempt: int | None, lease: float
    ) -> Timer | None:
        """Stamp `started_at` on this timer if it is `executing` under claim `attempt` (any claim
        when None) and no other delivery of it started less than `lease` seconds ago.

        Returns the timer when the caller may deliver it, else None (finished, canceled, claimed
        again since, or being delivered elsewhere right now).
        """
        conditions = [
            timers.c.id == timer_id,
            timers.c.status == TimerStatus.EXECUTING.value,
            _not_being_delivered(lease),
        ]
        if attempt is not None:
            conditions.append(timers.c.attempts == attempt)
        stmt = timers.update().where(*conditions).values(started_at=func.now()).returning(*timers.c)
        with self._statement() as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else Timer.from_row(row)

    def begin_deliveries(
        self, claims: Sequence[tuple[uuid.UUID, int]], lease: float
    ) -> list[Timer]:
        """`begin_delivery` for many (id, attempt) claims in one statement; returns the timers the
        caller may deliver."""
        if not claims:
            return []
        claimed = _claims_table([(tid, attempt) for tid, attempt in claims])
        stmt = (
            timers.update()
            .where(
                timers.c.id == claimed.c.id,
                timers.c.attempts == claimed.c.attempt,
                timers.c.status == TimerStatus.EXECUTING.value,
                _not_being_delivered(lease),
            )
            .values(started_at=func.now())
            .returning(*timers.c)
        )
        with self._statement() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [Timer.from_row(r) for r in rows]

    def finish_many(self, outcomes: Sequence[tuple[uuid.UUID, int, str | None]]) -> int:
        """`finish` for many (id, attempt, error) outcomes in one statement; returns how many rows
        it recorded (rows no longer `executing` under that claim are left alone)."""
        if not outcomes:
            return 0
        rows = []
        for tid, attempt, error in outcomes:
            if error is not None and len(error) > MAX_ERROR_LENGTH:
                error = error[: MAX_ERROR_LENGTH - 1] + "…"
            status = TimerStatus.COMPLETED if error is None else TimerStatus.FAILED
            rows.append((tid, attempt, status.value, error))
        outcome = values(
            column("id", UUID(as_uuid=True)),
            column("attempt", Integer()),
            column("status", Text()),
            column("error", Text()),
            name="outcome",
        ).data(rows)
        stmt = (
            timers.update()
            .where(
                timers.c.id == outcome.c.id,
                timers.c.attempts == outcome.c.attempt,
                timers.c.status == TimerStatus.EXECUTING.value,
            )
            .values(status=outcome.c.status, last_error=outcome.c.error, executed_at=func.now())
        )
        with self._statement() as conn:
            return int(conn.execute(stmt).rowcount)

    def finish(self, timer_id: uuid.UUID, error: str | None, attempt: int | None = None) -> bool:
        """Record the outcome of a delivery: `completed` when `error` is None, else `failed` with
        `last_error`; `executed_at` is set either way.

        Touches the row only while it is `executing` (under claim `attempt`, when given); returns
        False if it was not (a redelivered message for a finished timer changes nothing).
        """
        status = TimerStatus.COMPLETED if error is None else TimerStatus.FAILED
        if error is not None and len(error) > MAX_ERROR_LENGTH:
            error = error[: MAX_ERROR_LENGTH - 1] + "…"
        conditions = [timers.c.id == timer_id, timers.c.status == TimerStatus.EXECUTING.value]
        if attempt is not None:
            conditions.append(timers.c.attempts == attempt)
        stmt = (
            timers.update()
            .where(*conditions)
            .values(status=status.value, last_error=error, executed_at=func.now())
        )
        with self._statement() as conn:
            return conn.execute(stmt).rowcount == 1

    # -- recovery ----------------------------------------------------------------------------

    def recover_stale(self, enqueue_timeout: float, stale_delivery_after: float) -> list[Timer]:
        """Put back to `pending`, to be fired again, the `executing` timers that were claimed more
        than `enqueue_timeout` seconds ago and never started by a worker (the scheduler died before
        enqueueing, or the broker lost the message), and those whose delivery started more than
        `stale_delivery_after` seconds ago without an outcome (worker and message both lost).

        `last_error` says why; the next claim increments `attempts`, so a late copy of the old
        message is ignored by the workers.
        """
        lost = timers.c.started_at.is_(None) & (
            timers.c.claimed_at < func.now() - _seconds(enqueue_timeout)
        )
        abandoned = timers.c.started_at < func.now() - _seconds(stale_delivery_after)
        reason = case(
            (timers.c.started_at.is_(None), "recovered: claimed but never picked up by a worker"),
            else_="recovered: delivery started but never finished",
        )
        stmt = (
            timers.update()
            .where(timers.c.status == TimerStatus.EXECUTING.value, lost | abandoned)
            .values(
                status=TimerStatus.PENDING.value,
                claimed_at=None,
                started_at=None,
                last_error=reason,
            )
            .returning(*timers.c)
        )
        with self._statement() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [Timer.from_row(r) for r in rows]

    def fail_missed(self, recovery_window: float) -> int:
        """Mark `failed` the `pending` timers due more than `recovery_window` seconds ago, with a
        `last_error` starting `missed:` (the `skip` misfire policy)."""
        stmt = (
            timers.update()
            .where(
                timers.c.status == TimerStatus.PENDING.value,
                timers.c.execute_at < func.now() - _seconds(recovery_window),
            )
            .values(
                status=TimerStatus.FAILED.value,
                last_error=func.concat(
                    "missed: due at ",
                    func.to_char(
                        func.timezone("UTC", timers.c.execute_at), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
                    ),
                    f", more than {recovery_window:g}s before a scheduler could fire it",
                ),
            )
        )
        with self._statement() as conn:
            return conn.execute(stmt).rowcount


CHANGES_CHANNEL = "timers_changed"


@dataclass(frozen=True)
class Change:
    timer_id: uuid.UUID
    execute_at: datetime


class ChangeFeed:
    """`LISTEN timers_changed` on a connection of its own (filled by the migrations' trigger).

    Notifications are a hint, not the truth: a reader reloads the rows they name, and after a lost
    connection reloads everything, since notifications sent meanwhile are gone.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = None

    def open(self) -> None:
        self.close()
        connection = self.engine.connect()
        connection.execute(text(f"LISTEN {CHANGES_CHANNEL}"))
        self._connection = connection

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    def wait(self, timeout: float) -> list[Change]:
        """The changes that arrive within `timeout` seconds (empty if none); raises when the
        connection is lost."""
        dbapi = self._connection.connection.driver_connection
        if not dbapi.notifies:
            ready, _, _ = io_select.select([dbapi], [], [], timeout)
            if ready:
                dbapi.poll()
        else:
            dbapi.poll()
        changes = []
        while dbapi.notifies:
            note = dbapi.notifies.pop(0)
            raw_id, _, epoch = note.payload.partition(" ")
            try:
                at = datetime.fromtimestamp(float(epoch), tz=UTC)
                changes.append(Change(uuid.UUID(raw_id), at))
            except ValueError:
                log.warning("ignoring malformed change notification %r", note.payload)
        return changes

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                log.debug("closing the change feed connection failed", exc_info=True)
            self._connection = None
