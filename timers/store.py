"""Every query and transaction on the `timers` table. Nothing else in the package writes SQL.

Each public method is one transaction: a method that runs a single statement runs it in autocommit
(a statement is atomic on its own), one that runs several wraps them in BEGIN/COMMIT. Docstrings say
exactly which rows a statement touches.
Times that several hosts compare (is a timer due?) come from the database's `now()`.
"""

from __future__ import annotations

import json
import logging
import select as io_select
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NoReturn

import psycopg2
from sqlalchemy import (
    Engine,
    Float,
    Integer,
    Text,
    any_,
    bindparam,
    case,
    cast,
    column,
    create_engine,
    func,
    literal,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from timers import totals
from timers.errors import RedriveLimitReached
from timers.models import (
    MAX_INT_DIGITS,
    Claimed,
    DueTime,
    Timer,
    TimerStatus,
    TooLongInteger,
    uuid7,
)
from timers.retries import MAX_REDRIVES
from timers.schema import timer_labels, timers
from timers.storage import (
    BACKLOG_CAP,
    EXACT_COUNT_LIMIT,
    FINISHED,
    HISTORY_LENGTH,
    LATENESS_MINUTES,
    LOST_CLAIM,
    LOST_DELIVERY,
    SORT_COLUMNS,
    SORT_ORDERS,
    Change,
    Claim,
    Created,
    IdempotencyKey,
    IdempotencyKeyReused,
    LatenessMinute,
    NearTerm,
    NewTimer,
    Outcome,
    PagePosition,
    Purged,
    PurgePosition,
    Recovered,
    RecoveryRules,
    Stats,
    StoreError,
    StoreUnavailable,
    TimerFilter,
    TimerNotFound,
    TimerNotPending,
    TimerPage,
    clip_error,
)

__all__ = [
    "NewTimer",
    "NotificationFeed",
    "StoreError",
    "StoreUnavailable",
    "TimerNotFound",
    "TimerNotPending",
    "TimerStore",
    "database_engine",
]

log = logging.getLogger(__name__)


def database_engine(url: str, *, statement_timeout: float | None = None, **kwargs: Any) -> Engine:
    """An engine on psycopg2 for a user's `postgresql://` URL (SQLAlchemy 2.1 would pick psycopg 3).

    Its connections are in autocommit: a single statement is its own transaction with no BEGIN and
    COMMIT round trips; `TimerStore` opens an explicit transaction where it runs several. With
    `statement_timeout` (seconds), PostgreSQL cancels any statement of theirs that runs longer (a
    StoreError; the connection stays usable).
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("isolation_level", "AUTOCOMMIT")
    connect_args = dict(kwargs.get("connect_args", {"connect_timeout": 5}))
    if statement_timeout is not None:
        # Beside any libpq `options` the URL gives (connect_args would replace them).
        given = parsed.query.get("options") or ()
        options = [given] if isinstance(given, str) else list(given)
        options.append(f"-c statement_timeout={round(statement_timeout * 1000)}")
        connect_args["options"] = " ".join(options)
    kwargs["connect_args"] = connect_args
    kwargs.setdefault("json_deserializer", load_json)
    return create_engine(parsed, **kwargs)


# The insert `create_in` runs on a caller's connection, in the two placeholder styles.
_INSERT = (
    "INSERT INTO timers (id, execute_at, callback_type, callback_config, metadata, retry, owner, "
    "status) VALUES ({id}, {execute_at}, {callback_type}, CAST({callback_config} AS jsonb), "
    "CAST({metadata} AS jsonb), CAST({retry} AS jsonb), {owner}, 'pending') RETURNING *"
)
_FIELDS = ("id", "execute_at", "callback_type", "callback_config", "metadata", "retry", "owner")
INSERT_SQL_NAMED = _INSERT.format(
    **{f: f"CAST(:{f} AS uuid)" if f == "id" else f":{f}" for f in _FIELDS}
)
INSERT_SQL_PYFORMAT = _INSERT.format(
    **{f: f"CAST(%({f})s AS uuid)" if f == "id" else f"%({f})s" for f in _FIELDS}
)


def _decoded(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row read on a caller's connection: its JSON may come back as text, its id as text."""
    decoded = dict(row)
    for name in ("callback_config", "metadata", "retry", "history"):
        if isinstance(decoded.get(name), str):
            decoded[name] = load_json(decoded[name])
    if isinstance(decoded.get("id"), str):
        decoded["id"] = uuid.UUID(decoded["id"])
    return decoded


# `create`'s statement, built once (a create is the hot path of the Python API).
_CREATE = (
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
        | {"status": TimerStatus.PENDING.value}
    )
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(*timers.c)
)


def _new_values(new: NewTimer) -> dict[str, Any]:
    """The values of a new timer's row, with a fresh UUIDv7 id (status and key aside)."""
    return {
        "id": uuid7(),
        "execute_at": new.execute_at,
        "callback_type": new.callback_type,
        "callback_config": dict(new.callback_config),
        "metadata": None if new.metadata is None else dict(new.metadata),
        "retry": None if new.retry is None else dict(new.retry),
        "owner": new.owner,
    }


def _new_row(new: NewTimer) -> dict[str, Any]:
    """The row of a new `pending` timer, with a fresh UUIDv7 id and its idempotency key, if any."""
    key = new.idempotency
    return _new_values(new) | {
        "status": TimerStatus.PENDING.value,
        "idempotency_key": None if key is None else key.key,
        "api_key_hash": None if key is None else key.owner,
        "request_hash": None if key is None else key.request,
    }


def load_json(text: str) -> Any:
    """JSON from the database. An integer too long for Python to convert (only a direct write
    can store one) is kept as its text (`TooLongInteger`), so that its row stays readable and
    fails only its own delivery instead of every read that touches it.

    The C decoder reads integers itself; a Python hook per integer (`_integer`) cost more than the
    rest of the decoding, so it runs only on a document where Python refused an integer."""
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer longer than Python's int conversion limit
        return _LONG_INTEGERS.decode(text)


def _integer(text: str) -> int | str:
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else TooLongInteger(text)


# Made once: json.loads with an argument builds a new decoder on every call.
_DECODER = json.JSONDecoder()
_LONG_INTEGERS = json.JSONDecoder(parse_int=_integer)


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


def _seconds(value: float) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, bindparam(None, value, type_=Float()))


def _interval(seconds: Any) -> Any:
    """An interval of `seconds` (a column or expression)."""
    return func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def _unnest(name: str, **columns: Any) -> Any:
    """A table of rows from parallel arrays (`unnest(:name_a, :name_b, …)`), each column
    `a=type`; the arrays are bound when the statement runs. Its statement is the same however
    many rows it holds, so the hot statements below are built once and compiled once."""
    arrays = [bindparam(f"{name}_{n}", type_=ARRAY(t)) for n, t in columns.items()]
    return (
        func.unnest(*arrays)
        .table_valued(*(column(n, t) for n, t in columns.items()))
        .render_derived(name=name)
    )


_CLAIMS = _unnest("claim", id=UUID(as_uuid=True), attempt=Integer())


def _claims(claims: Sequence[Claim]) -> dict[str, list[Any]]:
    """The parameters of `_CLAIMS`."""
    return {
        "claim_id": [tid for tid, _ in claims],
        "claim_attempt": [int(attempt) for _, attempt in claims],
    }


def _update_claimed(*, unstarted: bool = False) -> Any:
    """An UPDATE of the rows still `executing` under one of the `_CLAIMS` (id, attempt) (and, with
    `unstarted`, not started by a worker yet)."""
    conditions = [
        timers.c.id == _CLAIMS.c.id,
        timers.c.attempts == _CLAIMS.c.attempt,
        timers.c.status == TimerStatus.EXECUTING.value,
    ]
    if unstarted:
        conditions.append(timers.c.started_at.is_(None))
    return timers.update().where(*conditions)


# The hot statements of the scheduler and the workers, built once: building one costs more CPU
# than PostgreSQL spends running it. Their values are bound when they run.
_LEASE_END = func.now() + _interval(bindparam("lease", type_=Float()))
# What started deliveries return: every column but the two JSON ones no delivery reads (decoding
# a history of up to HISTORY_LENGTH attempts for every delivery was a measurable share of the
# worker's CPU).
_FOR_DELIVERY = [c for c in timers.c if c.name not in ("metadata", "history")]
# A claim returns no JSON at all: what the scheduler enqueues (id and claim number), the due
# time and an occurrence's schedule. Reading the callback config too made a claim's cost grow
# with the timers' size. An occurrence of a schedule (0012) that is later than its `late_limit`,
# or has `skip_if_running` while another of its schedule is executing or waiting to retry, is
# skipped (`canceled`, `skipped: …`) by the first CTE instead, its schedule's count of skipped
# slots raised; a timer of no schedule pays only the `schedule_id IS NOT NULL` check.
_CLAIM_DUE = text(
    """
WITH due AS (  -- skips rows another transaction holds: a claim never waits on a lock
    SELECT id, schedule_id, execute_at, late_limit, skip_if_running FROM timers
    WHERE id = ANY(:ids) AND status = 'pending' AND execute_at <= now()
    FOR UPDATE SKIP LOCKED
), skipped AS (
    UPDATE timers t SET status = 'canceled', updated_at = now(),
        last_error = CASE
            WHEN d.late_limit IS NOT NULL
                AND now() - d.execute_at > make_interval(secs => d.late_limit)
            THEN 'skipped: later than its catch-up limit of ' || d.late_limit || ' s'
            ELSE 'skipped: the previous occurrence is still running' END
    FROM due d
    WHERE t.id = d.id AND d.schedule_id IS NOT NULL AND (
        (d.late_limit IS NOT NULL AND now() - d.execute_at > make_interval(secs => d.late_limit))
        OR (d.skip_if_running AND EXISTS (
            SELECT 1 FROM timers o
            WHERE o.schedule_id = d.schedule_id AND o.id <> d.id
              AND (o.status = 'executing' OR (o.status = 'pending' AND o.delivery_attempts > 0))
        ))
    )
    RETURNING t.id, t.schedule_id
), counted AS (
    UPDATE schedules s SET skipped = s.skipped + c.n
    FROM (SELECT schedule_id, count(*) AS n FROM skipped GROUP BY schedule_id) c
    WHERE s.id = c.schedule_id
)
UPDATE timers SET status = 'executing', claimed_at = now(), started_at = NULL,
    leased_until = NULL, attempts = attempts + 1
WHERE id IN (SELECT id FROM due) AND status = 'pending'
  AND id NOT IN (SELECT id FROM skipped)
RETURNING id, attempts, execute_at, schedule_id
"""
).bindparams(bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))
_RELEASE = _update_claimed(unstarted=True).values(status=TimerStatus.PENDING.value, claimed_at=None)
_BEGIN = (
    _update_claimed(unstarted=True)
    .values(started_at=func.now(), leased_until=_LEASE_END)
    .returning(*_FOR_DELIVERY)
)
_RENEW = _update_claimed().values(leased_until=_LEASE_END)
_OUTCOMES = _unnest(
    "outcome",
    id=UUID(as_uuid=True),
    attempt=Integer(),
    status=Text(),
    error=Text(),
    retry_in=Float(),
    entry=Text(),
)
_RETRYING = _OUTCOMES.c.retry_in.is_not(None)
_FINISH = (
    timers.update()
    .where(
        timers.c.id == _OUTCOMES.c.id,
        timers.c.attempts == _OUTCOMES.c.attempt,
        timers.c.status == TimerStatus.EXECUTING.value,
    )
    .values(
        status=_OUTCOMES.c.status,
        last_error=_OUTCOMES.c.error,
        executed_at=func.now(),
        leased_until=None,
        execute_at=case(
            (_RETRYING, func.now() + _interval(cast(_OUTCOMES.c.retry_in, Float()))),
            else_=timers.c.execute_at,
        ),
        claimed_at=case((_RETRYING, None), else_=timers.c.claimed_at),
        started_at=case((_RETRYING, None), else_=timers.c.started_at),
        delivery_attempts=timers.c.delivery_attempts + 1,
        history=case(
            (
                func.jsonb_array_length(timers.c.history) >= HISTORY_LENGTH,
                timers.c.history.op("-")(0).op("||")(cast(_OUTCOMES.c.entry, JSONB)),
            ),
            else_=timers.c.history.op("||")(cast(_OUTCOMES.c.entry, JSONB)),
        ),
    )
)


def _id_array(timer_ids: Iterable[uuid.UUID]) -> Any:
    return bindparam("ids", value=list(timer_ids), type_=ARRAY(UUID(as_uuid=True)))


def describe_database_error(exc: BaseException) -> str:
    """The driver's message for a database error, on one line."""
    reason = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    return " ".join(lines) or type(reason).__name__


@contextmanager
def database_errors() -> Iterator[None]:
    """Driver errors become StoreUnavailable (can't reach the database: retry later) or StoreError
    (the database refused the statement), so that nothing above the store imports SQLAlchemy."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailable(describe_database_error(exc)) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(describe_database_error(exc)) from exc
        raise StoreError(describe_database_error(exc)) from exc
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:  # a caller's connection
        raise StoreUnavailable(describe_database_error(exc)) from exc
    except psycopg2.Error as exc:
        raise StoreError(describe_database_error(exc)) from exc


def _matching(where: TimerFilter) -> list[Any]:
    """The WHERE conditions of a filter, each served by migration 0008's indexes (the callback
    kind, one of three, filters the rows of whichever index scan the rest picks)."""
    conditions: list[Any] = []
    if where.status is not None:
        conditions.append(timers.c.status == where.status.value)
    if where.callback_type is not None:
        conditions.append(timers.c.callback_type == where.callback_type)
    if where.metadata is not None:
        conditions.append(timers.c.metadata.contains(dict(where.metadata)))
    if where.execute_after is not None:
        conditions.append(timers.c.execute_at >= where.execute_after)
    if where.execute_before is not None:
        conditions.append(timers.c.execute_at < where.execute_before)
    if where.schedule_id is not None:
        conditions.append(timers.c.schedule_id == where.schedule_id)
    return conditions + _owned_by(where.owner)


def _owned_by(owner: str | None) -> list[Any]:
    """The condition that a timer is this owner's (none for None: every owner's)."""
    return [] if owner is None else [timers.c.owner == owner]


LABEL_LENGTH = 200  # the longest key, and string value, that `timers_labels_of` makes a label
LABEL_INTEGER = 10**15  # integers below this in size are labels


def label_of(where: TimerFilter) -> tuple[str, Any] | None:
    """The label a page walks for this filter (migration 0009): only for a filter of exactly one
    metadata pair and nothing else, whose pair `timers_labels_of` makes a label (the same rule,
    lengths counted in UTF-8 bytes, never more than PostgreSQL's characters); else None. With
    more conditions, walking one label could read every timer that carries it to find a few that
    match the rest: those filters take the GIN index and sort what it finds."""
    if where.metadata is None or len(where.metadata) != 1:
        return None
    if not replace(where, metadata=None).is_empty:
        return None
    ((key, value),) = where.metadata.items()
    if len(key.encode()) > LABEL_LENGTH:
        return None
    if (
        isinstance(value, bool)
        or (isinstance(value, str) and len(value.encode()) <= LABEL_LENGTH)
        or (isinstance(value, int) and abs(value) < LABEL_INTEGER)
    ):
        return key, value
    return None


# The table's row estimate and the status column's most common values with their frequencies.
_ESTIMATE_COUNTS = text(
    """
    SELECT c.reltuples::bigint AS rows,
           s.most_common_vals::text::text[] AS statuses,
           s.most_common_freqs AS frequencies
    FROM pg_class c
    LEFT JOIN pg_stats s
      ON s.schemaname = current_schema() AND s.tablename = 'timers' AND s.attname = 'status'
    WHERE c.oid = 'timers'::regclass
    """
)

LATENESS_SAMPLE = 20_000
_LATENESS = text(
    """
    WITH recent AS (
        (SELECT updated_at, started_at - execute_at AS late FROM timers
         WHERE status = 'completed' AND updated_at > now() - make_interval(mins => :minutes)
         ORDER BY status, updated_at DESC LIMIT :sample)
        UNION ALL
        (SELECT updated_at, started_at - execute_at AS late FROM timers
         WHERE status = 'failed' AND updated_at > now() - make_interval(mins => :minutes)
         ORDER BY status, updated_at DESC LIMIT :sample)
    )
    SELECT date_trunc('minute', updated_at) AS minute, count(*) AS count,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM late)) * 1000 AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM late)) * 1000 AS p99,
           max(extract(epoch FROM late)) * 1000 AS max
    FROM recent WHERE late IS NOT NULL
    GROUP BY 1 ORDER BY 1
    """
)

# Any fixed number: the key of the advisory lock that lets one purge run at a time.
PURGE_LOCK = 0x74696D657273  # "timers"
# A row another transaction holds longer than this fails the batch (the pass tries again later)
# instead of stalling every purge behind the advisory lock; set by the statement for itself.
PURGE_LOCK_TIMEOUT = 10.0
_NIL = uuid.UUID(int=0)
_PURGE = text(
    """
    WITH lock AS (
        SELECT pg_try_advisory_xact_lock(:lock) AS held,
               set_config('lock_timeout', :lock_timeout, true)
    ),
    doomed AS MATERIALIZED (
        SELECT s.n, t.status, t.updated_at, t.id
        FROM unnest(CAST(:statuses AS text[])) WITH ORDINALITY AS s(status, n)
        CROSS JOIN LATERAL (
            SELECT t.status, t.updated_at, t.id FROM timers t
            WHERE (SELECT held FROM lock)
              AND t.status IN ('completed', 'failed', 'canceled')
              AND t.status = s.status
              AND (t.updated_at, t.id) > (
                  CASE WHEN s.n = 1 THEN CAST(:after_at AS timestamptz) ELSE '-infinity' END,
                  CASE WHEN s.n = 1 THEN CAST(:after_id AS uuid) ELSE :nil END
              )
              AND t.updated_at < now() - make_interval(secs => :age)
            ORDER BY t.updated_at, t.id
            LIMIT :limit
        ) t
        ORDER BY s.n, t.updated_at, t.id
        LIMIT :limit
    ),
    gone AS (
        DELETE FROM timers d
        WHERE d.id = ANY (ARRAY(SELECT id FROM doomed))
          -- re-checked on a row changed meanwhile; IS TRUE keeps it out of the index choice,
          -- so the rows are found by id
          AND (d.status IN ('completed', 'failed', 'canceled')
               AND d.updated_at < now() - make_interval(secs => :age)) IS TRUE
        RETURNING 1
    ),
    last AS (SELECT * FROM doomed ORDER BY n DESC, updated_at DESC, id DESC LIMIT 1)
    SELECT (SELECT held FROM lock) AS held,
           (SELECT count(*) FROM doomed) AS seen,
           (SELECT count(*) FROM gone) AS deleted,
           (SELECT status FROM last) AS last_status,
           (SELECT updated_at FROM last) AS last_at,
           (SELECT id FROM last) AS last_id
    """
)


class TimerStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _statement(self) -> Iterator[Any]:
        """A connection for a method that runs one statement: the engine's autocommit makes the
        statement its own transaction."""
        with database_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A connection inside BEGIN … COMMIT, for a method that runs several statements."""
        with database_errors(), self.engine.connect() as conn:
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
        """Insert one `pending` timer with a fresh UUIDv7 id.

        The id is made here, so the insert can be sent again safely: a pooled connection that
        died with the database (the engine may skip the ping per checkout) fails the first try,
        and the second one writes the row, or finds it written if the first did reach the
        database."""
        params = _new_values(new)
        timer_id = params["id"]
        for last_try in (False, True):
            try:
                with self._statement() as conn:
                    row = conn.execute(_CREATE, params).mappings().first()
                    if row is None:
                        by_id = select(timers).where(timers.c.id == timer_id)
                        row = conn.execute(by_id).mappings().one()
                return Timer.from_row(row)
            except StoreUnavailable:
                if last_try:
                    raise
        raise AssertionError("unreachable")

    def create_in(self, connection: Any, new: NewTimer) -> Timer:
        """Insert one `pending` timer inside the caller's open transaction on the same database:
        `connection` is a SQLAlchemy `Connection` or a psycopg2 connection. The timer exists (and
        the scheduler hears of it) when the caller commits, and never if it rolls back."""
        params = _new_values(new)
        params["id"] = str(params["id"])
        for name in ("callback_config", "metadata", "retry"):
            if params[name] is not None:
                params[name] = json.dumps(params[name])
        if hasattr(connection, "execute") and hasattr(connection, "dialect"):
            with database_errors():
                row = connection.execute(text(INSERT_SQL_NAMED), params).mappings().one()
            return Timer.from_row(_decoded(row))
        with database_errors(), connection.cursor() as cursor:
            cursor.execute(INSERT_SQL_PYFORMAT, params)
            names = [c.name for c in cursor.description]
            row = dict(zip(names, cursor.fetchone(), strict=True))
        return Timer.from_row(_decoded(row))

    def create_once(self, batch: Sequence[NewTimer]) -> list[Created]:
        """Insert `pending` timers with fresh UUIDv7 ids, all or none, in one transaction; those
        with an idempotency key are inserted with `ON CONFLICT DO NOTHING` on the unique index of
        (`api_key_hash`, `idempotency_key`), so a key already taken inserts no row: its timer
        (committed, or inserted earlier in this batch) is returned with `created` False when its
        `request_hash` matches, else IdempotencyKeyReused is raised and the transaction rolled
        back. A concurrent insert of the same key makes PostgreSQL wait for its commit, so two
        racing calls make one timer. Keyed rows are inserted in key order, so two batches never
        wait on each other in a cycle."""
        if not batch:
            return []
        rows = [_new_row(new) for new in batch]
        first: dict[tuple[str, str], int] = {}  # each key's first use in the batch
        for index, new in enumerate(batch):
            if new.idempotency is not None:
                first.setdefault((new.idempotency.owner, new.idempotency.key), index)
        plain = [rows[i] for i, new in enumerate(batch) if new.idempotency is None]
        keyed = [rows[i] for _, i in sorted(first.items())]
        made: dict[uuid.UUID, Timer] = {}
        earlier: dict[tuple[str, str], Mapping[str, Any]] = {}
        with self._transaction() as conn:
            if plain:
                result = conn.execute(timers.insert().returning(*timers.c), plain)
                made.update((r["id"], Timer.from_row(r)) for r in result.mappings())
            if keyed:
                insert = (
                    pg_insert(timers)
                    .values(keyed)
                    .on_conflict_do_nothing(
                        index_elements=[timers.c.api_key_hash, timers.c.idempotency_key],
                        index_where=timers.c.idempotency_key.is_not(None),
                    )
                    .returning(*timers.c)
                )
                result = conn.execute(insert)
                made.update((r["id"], Timer.from_row(r)) for r in result.mappings())
                taken = [
                    (r["api_key_hash"], r["idempotency_key"]) for r in keyed if r["id"] not in made
                ]
                if taken:
                    by_key = tuple_(timers.c.api_key_hash, timers.c.idempotency_key)
                    found = conn.execute(select(timers).where(by_key.in_(taken))).mappings()
                    earlier = {(r["api_key_hash"], r["idempotency_key"]): r for r in found}
            answers = []
            for index, new in enumerate(batch):
                row = rows[index]
                if new.idempotency is None:
                    answers.append(Created(made[row["id"]], True))
                    continue
                pair = (new.idempotency.owner, new.idempotency.key)
                owner_row = rows[first[pair]]
                if owner_row["id"] in made:
                    timer, request = made[owner_row["id"]], owner_row["request_hash"]
                    created = first[pair] == index
                else:
                    timer, request = Timer.from_row(earlier[pair]), earlier[pair]["request_hash"]
                    created = False
                if request != new.idempotency.request:
                    raise IdempotencyKeyReused(new.idempotency.key, timer.id, index)
                answers.append(Created(timer, created))
        return answers

    def find_by_key(self, key: IdempotencyKey) -> Timer | None:
        """The timer whose (`api_key_hash`, `idempotency_key`) is this key's, or None; raises
        IdempotencyKeyReused when its `request_hash` differs."""
        query = select(timers).where(
            timers.c.api_key_hash == key.owner, timers.c.idempotency_key == key.key
        )
        with self._statement() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        if row["request_hash"] != key.request:
            raise IdempotencyKeyReused(key.key, row["id"])
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
        rows = [_new_values(new) | {"status": TimerStatus.PENDING.value} for new in batch]
        with self._transaction() as conn:
            result = conn.execute(
                timers.insert().returning(*timers.c, sort_by_parameter_order=True), rows
            )
            return [Timer.from_row(r) for r in result.mappings().all()]

    def get(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        """Read the timer with this id (and this owner, when given); raise TimerNotFound."""
        query = select(timers).where(timers.c.id == timer_id, *_owned_by(owner))
        with self._statement() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise TimerNotFound(timer_id)
        return Timer.from_row(row)

    def count_pending(self, owner: str, up_to: int) -> int:
        """This owner's `pending` timers, counted up to `up_to` (migration 0010's partial index
        of pending timers by owner: the count reads at most `up_to` index entries)."""
        some = (
            select(literal(1))
            .where(timers.c.owner == owner, timers.c.status == TimerStatus.PENDING.value)
            .limit(up_to)
            .subquery()
        )
        with self._statement() as conn:
            return int(conn.execute(select(func.count()).select_from(some)).scalar_one())

    def page(
        self,
        *,
        where: TimerFilter | None = None,
        limit: int = 50,
        offset: int = 0,
        sort: str = "created_at",
        order: str = "desc",
        after: PagePosition | None = None,
        with_total: bool = True,
    ) -> TimerPage:
        """One statement for the page (and, for the total, `timers.totals.count` unless this is
        the last page), read in one snapshot. In keyset form (`after`) the row comparison
        `(sort column, id) > / < (value, id)` starts an index scan of (column, id) — or (status,
        column, id) — exactly where the last page ended, so a page costs the same at any depth
        (migration 0008's indexes). A filter of one metadata label, in creation order, walks the
        labels' index (`label_of`, migration 0009) the same way and fetches each timer by id (the
        filter is still checked on the timer)."""
        if sort not in SORT_COLUMNS or order not in SORT_ORDERS:
            raise ValueError(f"bad sort {sort!r} / order {order!r}")
        where = where or TimerFilter()
        column, row_id = timers.c[sort], timers.c.id
        descending = order == "desc"
        label = label_of(where) if sort == "created_at" else None
        source: Any = timers
        if label is None:
            conditions = _matching(where)
            counted = (source, conditions)
        else:  # in creation order from the label's index, timers by id (0009)
            name, value = label  # the whole filter
            source = timer_labels.join(timers, timers.c.id == timer_labels.c.timer_id)
            column, row_id = timer_labels.c.created_at, timer_labels.c.timer_id
            conditions = [
                timer_labels.c.key == name,
                timer_labels.c.value == bindparam("label_value", value, type_=JSONB),
                # checked on each timer the labels lead to. The function, not the operator `@>`:
                # the GIN index (and its sort of every match) stays out of the planner's choice,
                # and the planner guesses a third of the rows pass, not a thousandth (which made
                # it start a parallel worker, 30 ms, to find "the one row" among 10,000 labels)
                func.jsonb_contains(
                    timers.c.metadata, bindparam("metadata", {name: value}, type_=JSONB)
                ),
                *_owned_by(where.owner),
            ]
            # The label's entries are its timers; a principal's share is counted on the join.
            counted = (
                (timer_labels, conditions[:2]) if where.owner is None else (source, conditions)
            )
        query = select(timers).select_from(source).where(*conditions)
        if after is not None:
            key, position = (
                tuple_(column, row_id),
                tuple_(
                    bindparam("after_value", after[0], type_=column.type),
                    bindparam("after_id", after[1], type_=timers.c.id.type),
                ),
            )
            query = query.where(key < position if descending else key > position)
        ordering = (column.desc(), row_id.desc()) if descending else (column, row_id)
        query = query.order_by(*ordering).limit(limit + 1).offset(offset)
        with self._transaction() if with_total else self._statement() as conn:
            if with_total:  # the count and the page from one snapshot
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            rows = conn.execute(query).mappings().all()
            total = exact = None
            if with_total and after is None and len(rows) <= limit and (rows or not offset):
                total, exact = offset + len(rows), True  # the last page: every match is known
            elif with_total:
                total, exact = totals.count(conn, *counted)
        page = [Timer.from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return TimerPage(
            timers=page,
            total=total,
            next=(getattr(page[-1], sort), page[-1].id) if more else None,
            total_exact=exact,
        )

    def cancel_matching(self, where: TimerFilter) -> int:
        """One UPDATE: every row matching `where` that is `pending` becomes `canceled` (the
        trigger notifies each). A row that a claim locked first is re-checked once the claim
        commits and, being `executing` by then, is left alone; a claim that comes second finds
        the row canceled. Returns how many were canceled."""
        if where.status not in (None, TimerStatus.PENDING):
            return 0
        stmt = (
            timers.update()
            .where(timers.c.status == TimerStatus.PENDING.value, *_matching(where))
            .values(status=TimerStatus.CANCELED.value)
        )
        with self._statement() as conn:
            return int(conn.execute(stmt).rowcount)

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
            row = conn.execute(_ESTIMATE_COUNTS).first()
            if row is not None and row.rows >= EXACT_COUNT_LIMIT and row.statuses:
                found = dict(zip(row.statuses, row.frequencies, strict=True))
                return {s.value: round(found.get(s.value, 0) * row.rows) for s in TimerStatus}, True
            exact = dict(
                conn.execute(select(timers.c.status, func.count()).group_by(timers.c.status)).all()
            )
        return {s.value: int(exact.get(s.value, 0)) for s in TimerStatus}, False

    def due_backlog(self) -> int:
        """Pending timers already due by the database's clock (not yet claimed), counted on the
        pending index up to BACKLOG_CAP."""
        due = (
            select(literal(1))
            .where(timers.c.status == TimerStatus.PENDING.value, timers.c.execute_at <= func.now())
            .limit(BACKLOG_CAP)
            .subquery()
        )
        with self._statement() as conn:
            return int(conn.execute(select(func.count()).select_from(due)).scalar_one())

    def lateness(self) -> list[LatenessMinute]:
        """Per minute of the last LATENESS_MINUTES, the lateness (started_at − execute_at) of
        the last attempt of the timers that finished (completed or failed) then, from at most
        the newest LATENESS_SAMPLE of each status on the finished index."""
        with self._statement() as conn:
            rows = conn.execute(
                _LATENESS, {"minutes": LATENESS_MINUTES, "sample": LATENESS_SAMPLE}
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
                _PURGE,
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

    def update_pending(
        self, timer_id: uuid.UUID, changes: Mapping[str, Any], owner: str | None = None
    ) -> Timer:
        """Apply `changes` to this timer (of this owner, when given) only if it is still `pending`.

        Raises TimerNotFound, or TimerNotPending with the status it has.
        """
        allowed = {"execute_at", "callback_type", "callback_config", "metadata", "retry"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")
        return self._change_pending(timer_id, changes, owner)

    def cancel(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        """Flip this timer (of this owner, when given) from `pending` to `canceled`; raise
        TimerNotFound or TimerNotPending."""
        return self._change_pending(timer_id, {"status": TimerStatus.CANCELED.value}, owner)

    def _change_pending(
        self, timer_id: uuid.UUID, values: Mapping[str, Any], owner: str | None
    ) -> Timer:
        """Set `values` on this timer if it is `pending` (one UPDATE); else say why not."""
        stmt = (
            timers.update()
            .where(
                timers.c.id == timer_id,
                timers.c.status == TimerStatus.PENDING.value,
                *_owned_by(owner),
            )
            .values(**values)
            .returning(*timers.c)
        )
        with self._transaction() as conn:
            row = conn.execute(stmt).mappings().first()
            if row is None:
                self._raise_missing_or_not_pending(conn, timer_id, owner)
        return Timer.from_row(row)

    @staticmethod
    def _raise_missing_or_not_pending(
        conn: Any, timer_id: uuid.UUID, owner: str | None
    ) -> NoReturn:
        query = select(timers.c.status).where(timers.c.id == timer_id, *_owned_by(owner))
        status = conn.execute(query).scalar()
        if status is None:
            raise TimerNotFound(timer_id)
        raise TimerNotPending(timer_id, TimerStatus(status))

    def ping(self) -> None:
        """Run `SELECT 1`; raises if the database can't be reached."""
        with self._statement() as conn:
            conn.execute(text("SELECT 1"))

    # -- scheduler ---------------------------------------------------------------------------

    def load_near_term(
        self,
        start: datetime | None,
        end: datetime,
        limit: int = 100_000,
        recovery: RecoveryRules | None = None,
    ) -> NearTerm:
        """The id and `execute_at` of the `pending` timers with `start <= execute_at <= end` (no
        lower bound when `start` is None), earliest first, at most `limit` of them; served by the
        partial index. Only two columns: a large window loads fast.

        With `recovery`, the same statement first puts back to `pending` the `executing` timers
        that `recovery` finds stranded (see `RecoveryRules`); they are returned too (they are due),
        with the reason also written to their `last_error`. One statement either way, so an idle
        scheduler costs the database one statement per load.
        """
        near = near_term_query(start, end, limit)
        if recovery is None:
            with self._statement() as conn:
                rows = conn.execute(near)
                return NearTerm([DueTime(row[0], row[1]) for row in rows], [])
        recovered = (
            _recover_statement(recovery)
            .returning(timers.c.id, timers.c.execute_at, timers.c.last_error)
            .cte("recovered")
        )
        loaded = near.add_columns(literal(None, Text()).label("reason")).subquery("near")
        stmt = select(loaded.c.id, loaded.c.execute_at, loaded.c.reason).union_all(
            select(recovered.c.id, recovered.c.execute_at, recovered.c.last_error)
        )
        with self._statement() as conn:
            rows = conn.execute(stmt).all()
        loaded_timers = [DueTime(row[0], row[1]) for row in rows if row[2] is None]
        recovered_timers = [Recovered(row[0], row[1], row[2]) for row in rows if row[2] is not None]
        return NearTerm(
            loaded_timers + [DueTime(r.id, r.execute_at) for r in recovered_timers],
            recovered_timers,
        )

    def pending_by_ids(self, timer_ids: Iterable[uuid.UUID]) -> list[DueTime]:
        """The id and `execute_at` of those of `timer_ids` that are `pending` now (any
        `execute_at`); no other column."""
        ids = list(timer_ids)
        if not ids:
            return []
        query = select(timers.c.id, timers.c.execute_at).where(
            timers.c.id == any_(_id_array(ids)), timers.c.status == TimerStatus.PENDING.value
        )
        with self._statement() as conn:
            rows = conn.execute(query).all()
        return [DueTime(row[0], row[1]) for row in rows]

    def changes(self) -> NotificationFeed:
        """A feed of the timers that became pending, changed while pending, or were canceled."""
        return NotificationFeed(self.engine)

    def claim_due(self, timer_ids: Sequence[uuid.UUID]) -> list[Claimed]:
        """Flip to `executing` those of `timer_ids` that are still `pending` and due by the database's
        clock, in one statement; return exactly the rows it flipped, each as its id, new claim
        number (`attempts` + 1) and `execute_at` (no JSON column is read back).

        A timer canceled, postponed or claimed by another scheduler since it was cached is not
        touched, so only the returned timers may be enqueued. Nor is one that another transaction
        holds right now (an API change or bulk cancel, another scheduler's claim): a claim never
        waits for a lock, and the caller re-reads the timers it did not get.
        """
        if not timer_ids:
            return []
        with self._statement() as conn:
            rows = conn.execute(_CLAIM_DUE, {"ids": list(timer_ids)}).all()
        return [Claimed(row[0], row[1], row[2], row[3]) for row in rows]

    def release(self, claims: Sequence[Claim]) -> int:
        """Put claimed timers whose message could not be enqueued back to `pending`.

        Touches only rows that are still `executing` under the same claim (id and `attempts`) and
        that no worker has started: a message that reached a worker after all is never undone.
        """
        if not claims:
            return 0
        with self._statement() as conn:
            return int(conn.execute(_RELEASE, _claims(claims)).rowcount)

    # -- worker ------------------------------------------------------------------------------

    def begin_deliveries(self, claims: Sequence[Claim], lease: float) -> list[Timer]:
        """Start the deliveries of the (id, attempt) claims that are `executing` under that claim
        and not started yet: stamp `started_at` and a lease until now + `lease` seconds, in one
        statement. Returns the timers the caller now delivers; a claim already started (a
        redelivered copy of its message), finished, canceled or claimed again is left alone."""
        if not claims:
            return []
        with self._statement() as conn:
            rows = conn.execute(_BEGIN, {**_claims(claims), "lease": lease}).mappings().all()
        return [Timer.from_row(r) for r in rows]

    def renew_leases(self, claims: Sequence[Claim], lease: float) -> int:
        """Extend to now + `lease` seconds the leases of the (id, attempt) claims still `executing`
        under that claim; returns how many were renewed."""
        if not claims:
            return 0
        with self._statement() as conn:
            return int(conn.execute(_RENEW, {**_claims(claims), "lease": lease}).rowcount)

    def finish_many(self, outcomes: Sequence[Outcome]) -> int:
        """Record the outcomes of delivery attempts in one statement: `completed` when the error
        is None, `failed` with `last_error`, or, for a retry, back to `pending` due `retry_in`
        seconds from now (claim, start and lease cleared, so it is claimed afresh); `executed_at`
        set, one more delivery attempt counted, and the attempt appended to the history (the last
        HISTORY_LENGTH kept). Touches only rows still `executing` under that claim; returns how
        many it recorded (a row recovered and claimed again since is left alone)."""
        if not outcomes:
            return 0
        params = {
            "outcome_id": [o.timer_id for o in outcomes],
            "outcome_attempt": [o.attempt for o in outcomes],
            "outcome_status": [o.status.value for o in outcomes],
            "outcome_error": [clip_error(o.error) for o in outcomes],
            "outcome_retry_in": [o.retry_in for o in outcomes],
            "outcome_entry": [
                json.dumps([dict(o.entry)] if o.entry is not None else []) for o in outcomes
            ],
        }
        with self._statement() as conn:
            return int(conn.execute(_FINISH, params).rowcount)

    def redrive(self, timer_id: uuid.UUID, owner: str | None = None) -> Timer:
        """Put a `failed` timer (of this owner, when given) redriven fewer than MAX_REDRIVES times
        back to `pending`, due now, with a fresh attempt budget (its history kept) and one more
        redrive counted; raises TimerNotFound, TimerNotPending with the status it has, or
        RedriveLimitReached."""
        failed = timers.c.status == TimerStatus.FAILED.value
        stmt = (
            timers.update()
            .where(
                timers.c.id == timer_id,
                failed,
                timers.c.redrives < MAX_REDRIVES,
                *_owned_by(owner),
            )
            .values(
                status=TimerStatus.PENDING.value,
                execute_at=func.now(),
                delivery_attempts=0,
                claimed_at=None,
                started_at=None,
                leased_until=None,
                redrives=timers.c.redrives + 1,
            )
            .returning(*timers.c)
        )
        with self._transaction() as conn:
            row = conn.execute(stmt).mappings().first()
            if row is None:
                spent = select(timers.c.redrives).where(
                    timers.c.id == timer_id, failed, *_owned_by(owner)
                )
                redrives = conn.execute(spent).scalar()
                if redrives is not None:
                    raise RedriveLimitReached(timer_id, redrives)
                self._raise_missing_or_not_pending(conn, timer_id, owner)
        return Timer.from_row(row)

    # -- recovery ----------------------------------------------------------------------------

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


def _recover_statement(recovery: RecoveryRules) -> Any:
    """The UPDATE that puts stranded `executing` timers back to `pending` (see RecoveryRules)."""
    lease_end = func.coalesce(timers.c.leased_until, timers.c.started_at + _seconds(recovery.lease))
    # A database that was down stopped every worker from renewing: after it comes back, give the
    # workers that are alive one lease to renew (or record) before taking their deliveries over.
    database_up_long_enough = func.pg_postmaster_start_time() < func.now() - _seconds(
        recovery.lease
    )
    lapsed = timers.c.started_at.is_not(None) & (lease_end < func.now()) & database_up_long_enough
    stranded = lapsed
    if recovery.queue_idle:
        lost = timers.c.started_at.is_(None) & (
            timers.c.claimed_at < func.now() - _seconds(recovery.enqueue_timeout)
        )
        stranded = lapsed | lost
    reason = case((timers.c.started_at.is_(None), LOST_CLAIM), else_=LOST_DELIVERY)
    return (
        timers.update()
        .where(timers.c.status == TimerStatus.EXECUTING.value, stranded)
        .values(
            status=TimerStatus.PENDING.value,
            claimed_at=None,
            started_at=None,
            leased_until=None,
            last_error=reason,
        )
    )


CHANGES_CHANNEL = "timers_changed"


class NotificationFeed:
    """`LISTEN timers_changed` on a connection of its own (filled by the migrations' trigger).

    Notifications are a hint, not the truth: each says which timer, when it is due and whether it
    is pending or canceled (0007; a reader re-reads the rows of older two-part ones), and after a lost
    connection a reader reloads everything, since notifications sent meanwhile are gone.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = None

    def open(self) -> None:
        self.close()
        with database_errors():
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
        try:
            if not dbapi.notifies:
                ready, _, _ = io_select.select([dbapi], [], [], timeout)
                if ready:
                    dbapi.poll()
            else:
                dbapi.poll()
        except (OSError, psycopg2.Error) as exc:
            raise StoreUnavailable(f"change feed lost: {describe_database_error(exc)}") from exc
        changes = []
        while dbapi.notifies:
            note = dbapi.notifies.pop(0)
            try:
                raw_id, epoch, *status = note.payload.split(" ")
                at = datetime.fromtimestamp(float(epoch), tz=UTC)
                pending = status[0] == TimerStatus.PENDING.value if status else None
                changes.append(Change(uuid.UUID(raw_id), at, pending))
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
