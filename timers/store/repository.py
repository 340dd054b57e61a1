"""Timers as the API and the Python API make, read and change them, on the PostgreSQL store
(`TimerRepository`, listing aside: `listing`)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from sqlalchemy import bindparam, func, literal, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert

from timers.errors import RedriveLimitReached
from timers.models import Timer, TimerStatus
from timers.retries import MAX_REDRIVES
from timers.schema import timers
from timers.storage import (
    Created,
    IdempotencyKey,
    IdempotencyKeyReused,
    NewTimer,
    StoreError,
    StoreUnavailable,
    TimerNotFound,
    TimerNotPending,
    check_changes,
)
from timers.storage.batches import answer_batch, first_uses
from timers.store.connection import (
    Connected,
    database_errors,
    decoded,
    describe_database_error,
    new_timer_arrays,
    owned_by,
)
from timers.store.sql import queries

PENDING = TimerStatus.PENDING.value
FAILED = TimerStatus.FAILED.value

# The insert `create_in` runs on a caller's connection, in the two placeholder styles.
INSERT_SQL_NAMED = queries["insert_timer"]
INSERT_SQL_PYFORMAT = re.sub(r"(?<!:):(\w+)", r"%(\1)s", INSERT_SQL_NAMED)
_INSERT_NAMED = text(INSERT_SQL_NAMED)
# `create_many`'s statement: the rows as arrays, so its cost is PostgreSQL's, not a per-row
# parameter rendering in Python.
INSERT_ARRAYS = text(queries["insert_timers"])

# `create`'s statement, built once (a create is the hot path of the Python API).
CREATE = (
    pg_insert(timers)
    .values(
        {
            name: bindparam(name, type_=timers.c[name].type)
            for name in (
                "id",
                "execute_at",
                "callback_type",
                "callback_config",
                "metadata",
                "retry",
                "owner",
            )
        }
        | {"status": PENDING}
    )
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(*timers.c)
)
PING = text(queries["ping"])
BY_ID = select(timers).where(timers.c.id == bindparam("id"))
INSERT = timers.insert().returning(*timers.c)
BY_KEY = select(timers).where(
    timers.c.api_key_hash == bindparam("owner"), timers.c.idempotency_key == bindparam("key")
)
# Pending timers of one owner, up to `up_to` of them (migration 0010's partial index).
COUNT_PENDING = select(func.count()).select_from(
    select(literal(1))
    .where(timers.c.owner == bindparam("owner"), timers.c.status == PENDING)
    .limit(bindparam("up_to"))
    .subquery()
)


def new_row(new: NewTimer) -> dict[str, Any]:
    """The row of a new `pending` timer, with a fresh UUIDv7 id and its idempotency key, if any."""
    key = new.idempotency
    return new.row_values() | {
        "status": PENDING,
        "idempotency_key": None if key is None else key.key,
        "api_key_hash": None if key is None else key.owner,
        "request_hash": None if key is None else key.request,
    }


def insert_keyed(rows: list[dict[str, Any]]) -> Any:
    """The INSERT of rows with idempotency keys: one whose key is taken inserts nothing."""
    return (
        pg_insert(timers)
        .values(rows)
        .on_conflict_do_nothing(
            index_elements=[timers.c.api_key_hash, timers.c.idempotency_key],
            index_where=timers.c.idempotency_key.is_not(None),
        )
        .returning(*timers.c)
    )


def by_keys(pairs: list[tuple[str, str]]) -> Any:
    """The timers of these (api_key_hash, idempotency_key) pairs."""
    return select(timers).where(tuple_(timers.c.api_key_hash, timers.c.idempotency_key).in_(pairs))


def by_id(timer_id: uuid.UUID, owner: str | None, *columns: Any) -> Any:
    """This timer (of this owner, when given): its `columns`, or the whole row."""
    return select(*(columns or (timers,))).where(timers.c.id == timer_id, *owned_by(owner))


def change_pending(timer_id: uuid.UUID, values: Mapping[str, Any], owner: str | None) -> Any:
    """The UPDATE that sets `values` on this timer (of this owner) if it is `pending`."""
    return (
        timers.update()
        .where(timers.c.id == timer_id, timers.c.status == PENDING, *owned_by(owner))
        .values(**values)
        .returning(*timers.c)
    )


def redrive_statement(timer_id: uuid.UUID, owner: str | None) -> Any:
    """The UPDATE that redrives this `failed` timer (of this owner) if it has redrives left."""
    return (
        timers.update()
        .where(
            timers.c.id == timer_id,
            timers.c.status == FAILED,
            timers.c.redrives < MAX_REDRIVES,
            *owned_by(owner),
        )
        .values(
            status=PENDING,
            execute_at=func.now(),
            delivery_attempts=0,
            claimed_at=None,
            started_at=None,
            leased_until=None,
            redrives=timers.c.redrives + 1,
        )
        .returning(*timers.c)
    )


def redrives_spent(timer_id: uuid.UUID, owner: str | None) -> Any:
    """The redrives of this timer (of this owner) if it is `failed`."""
    return select(timers.c.redrives).where(
        timers.c.id == timer_id, timers.c.status == FAILED, *owned_by(owner)
    )


class TimerStatements(Connected):
    def create(self, new: NewTimer) -> Timer:
        """Insert one `pending` timer with a fresh UUIDv7 id.

        The id is made here, so the insert can be sent again safely: a pooled connection that
        died with the database (the engine may skip the ping per checkout) fails the first try,
        and the second one writes the row, or finds it written if the first did reach the
        database."""
        params = new.row_values()
        timer_id = params["id"]
        for last_try in (False, True):
            try:
                with self._statement() as conn:
                    row = conn.execute(CREATE, params).mappings().first()
                    if row is None:
                        row = conn.execute(BY_ID, {"id": timer_id}).mappings().one()
                return Timer.from_row(row)
            except StoreUnavailable:
                if last_try:
                    raise
        raise AssertionError("unreachable")

    def create_in(self, connection: Any, new: NewTimer) -> Timer:
        """Insert one `pending` timer inside the caller's open transaction on the same database:
        `connection` is a SQLAlchemy `Connection`, a psycopg2 or psycopg 3 connection, or Django's
        `django.db.connection` (either PostgreSQL backend). The timer exists (and the scheduler
        hears of it) when the caller commits, and never if it rolls back."""
        params = new.row_values()
        params["id"] = str(params["id"])
        for name in ("callback_config", "metadata", "retry"):
            if params[name] is not None:
                params[name] = json.dumps(params[name])
        if hasattr(connection, "execute") and hasattr(connection, "dialect"):
            with database_errors():
                row = connection.execute(_INSERT_NAMED, params).mappings().one()
            return Timer.from_row(decoded(row))
        if hasattr(connection, "ensure_connection"):  # Django's wrapper: its DB-API connection,
            connection.ensure_connection()  # in the transaction `atomic()` opened on it
            connection = connection.connection
        # Either driver's own errors, which it names on its connections (a DB-API extension).
        unavailable = (connection.OperationalError, connection.InterfaceError)
        try:
            with connection.cursor() as cursor:
                cursor.execute(INSERT_SQL_PYFORMAT, params)
                names = [c.name for c in cursor.description]
                row = dict(zip(names, cursor.fetchone(), strict=True))
        except unavailable as exc:
            raise StoreUnavailable(describe_database_error(exc)) from exc
        except connection.Error as exc:
            raise StoreError(describe_database_error(exc)) from exc
        return Timer.from_row(decoded(row))

    def create_once(self, batch: Sequence[NewTimer]) -> list[Created]:
        """Insert `pending` timers with fresh UUIDv7 ids, all or none, in one transaction; those
        with an idempotency key are inserted with `ON CONFLICT DO NOTHING` on the unique index of
        (`api_key_hash`, `idempotency_key`), so a key already taken inserts no row: its timer
        (committed, or inserted earlier in this batch) is returned with `created` False when its
        `request_hash` matches, else IdempotencyKeyReused is raised and the transaction rolled
        back (`timers.storage.batches.answer_batch`). A concurrent insert of the same key makes
        PostgreSQL wait for its commit, so two racing calls make one timer. Keyed rows are
        inserted in key order, so two batches never wait on each other in a cycle."""
        if not batch:
            return []
        rows = [new_row(new) for new in batch]
        first = first_uses(batch)
        plain = [rows[i] for i, new in enumerate(batch) if new.idempotency is None]
        keyed = [rows[i] for _, i in sorted(first.items())]
        made: dict[uuid.UUID, Timer] = {}
        earlier: dict[tuple[str, str], tuple[Timer, str]] = {}
        with self._transaction() as conn:
            if plain:
                result = conn.execute(INSERT, plain)
                made.update((r["id"], Timer.from_row(r)) for r in result.mappings())
            if keyed:
                result = conn.execute(insert_keyed(keyed))
                made.update((r["id"], Timer.from_row(r)) for r in result.mappings())
                taken = [
                    (r["api_key_hash"], r["idempotency_key"]) for r in keyed if r["id"] not in made
                ]
                if taken:
                    found = conn.execute(by_keys(taken)).mappings()
                    earlier = {
                        (r["api_key_hash"], r["idempotency_key"]): (
                            Timer.from_row(r),
                            r["request_hash"],
                        )
                        for r in found
                    }
            return answer_batch(batch, lambda index: made[rows[index]["id"]], earlier)

    def find_by_key(self, key: IdempotencyKey) -> Timer | None:
        """The timer whose (`api_key_hash`, `idempotency_key`) is this key's, or None; raises
        IdempotencyKeyReused when its `request_hash` differs."""
        with self._statement() as conn:
            row = conn.execute(BY_KEY, {"owner": key.owner, "key": key.key}).mappings().first()
        if row is None:
            return None
        if row["request_hash"] != key.request:
            raise IdempotencyKeyReused(key.key, row["id"])
        return Timer.from_row(row)

    def find(self, timer_id: uuid.UUID) -> Timer | None:
        """The timer with this id, or None."""
        with self._statement() as conn:
            row = conn.execute(BY_ID, {"id": timer_id}).mappings().first()
        return None if row is None else Timer.from_row(row)

    def create_many(self, batch: Sequence[NewTimer]) -> list[Timer]:
        """Insert `pending` timers with fresh UUIDv7 ids, all or none, in one statement."""
        if not batch:
            return []
        rows = [new.row_values() for new in batch]
        params = new_timer_arrays(rows)
        with self._transaction() as conn:
            chosen = {r["id"]: dict(r) for r in conn.execute(INSERT_ARRAYS, params).mappings()}
        # In the order asked for (RETURNING promises no order of its own), each the row written:
        # what it was given, with what the database chose.
        return [Timer.from_row(row | chosen[row["id"]]) for row in rows]

    def get(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        """Read the timer with this id (and this owner, when given); raise TimerNotFound."""
        with self._statement() as conn:
            row = conn.execute(by_id(timer_id, owner)).mappings().first()
        if row is None:
            raise TimerNotFound(timer_id)
        return Timer.from_row(row)

    def count_pending(self, owner: str, up_to: int) -> int:
        """This owner's `pending` timers, counted up to `up_to` (migration 0010's partial index
        of pending timers by owner: the count reads at most `up_to` index entries)."""
        with self._statement() as conn:
            return int(conn.execute(COUNT_PENDING, {"owner": owner, "up_to": up_to}).scalar_one())

    def update_pending(
        self, timer_id: uuid.UUID, changes: Mapping[str, Any], owner: str | None = None
    ) -> Timer:
        """Apply `changes` to this timer (of this owner, when given) only if it is still `pending`.

        Raises TimerNotFound, or TimerNotPending with the status it has.
        """
        check_changes(changes)
        return self._change_pending(timer_id, changes, owner)

    def cancel(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        """Flip this timer (of this owner, when given) from `pending` to `canceled`; raise
        TimerNotFound or TimerNotPending."""
        return self._change_pending(timer_id, {"status": TimerStatus.CANCELED.value}, owner)

    def _change_pending(
        self, timer_id: uuid.UUID, values: Mapping[str, Any], owner: str | None
    ) -> Timer:
        """Set `values` on this timer if it is `pending` (one UPDATE); else say why not."""
        with self._transaction() as conn:
            row = conn.execute(change_pending(timer_id, values, owner)).mappings().first()
            if row is None:
                self._raise_missing_or_not_pending(conn, timer_id, owner)
        return Timer.from_row(row)

    @staticmethod
    def _raise_missing_or_not_pending(
        conn: Any, timer_id: uuid.UUID, owner: str | None
    ) -> NoReturn:
        status = conn.execute(by_id(timer_id, owner, timers.c.status)).scalar()
        if status is None:
            raise TimerNotFound(timer_id)
        raise TimerNotPending(timer_id, TimerStatus(status))

    def redrive(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        """Put a `failed` timer (of this owner, when given) redriven fewer than MAX_REDRIVES times
        back to `pending`, due now, with a fresh attempt budget (its history kept) and one more
        redrive counted; raises TimerNotFound, TimerNotPending with the status it has, or
        RedriveLimitReached."""
        with self._transaction() as conn:
            row = conn.execute(redrive_statement(timer_id, owner)).mappings().first()
            if row is None:
                redrives = conn.execute(redrives_spent(timer_id, owner)).scalar()
                if redrives is not None:
                    raise RedriveLimitReached(timer_id, redrives)
                self._raise_missing_or_not_pending(conn, timer_id, owner)
        return Timer.from_row(row)

    def ping(self) -> None:
        """Run `SELECT 1`; raises if the database can't be reached."""
        with self._statement() as conn:
            conn.execute(PING)
