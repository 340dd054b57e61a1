"""The PostgreSQL store's connection to its database: the engine, driver errors turned into the
store's own, JSON decoding, and the two ways a store method runs (one statement, or one
transaction of several). Nothing above the store imports SQLAlchemy or the driver.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg2
from sqlalchemy import Engine, Float, bindparam, column, create_engine, event, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from timers.models import MAX_INT_DIGITS, TooLongInteger
from timers.schema import timers
from timers.storage import StoreError, StoreUnavailable
from timers.store.sql import queries


def database_engine(
    url: str,
    *,
    statement_timeout: float | None = None,
    ping_after_idle: float | None = None,
    **kwargs: Any,
) -> Engine:
    """An engine on psycopg2 for a user's `postgresql://` URL (SQLAlchemy 2.1 would pick psycopg 3).

    Its connections are in autocommit: a single statement is its own transaction with no BEGIN and
    COMMIT round trips; `TimerStore` opens an explicit transaction where it runs several. With
    `statement_timeout` (seconds), PostgreSQL cancels any statement of theirs that runs longer (a
    StoreError; the connection stays usable).

    A pooled connection is pinged (`SELECT 1`, a round trip) before each use, so that one the
    database dropped is replaced instead of failing a request; with `ping_after_idle` (seconds),
    only one unused for longer than that is: a busy process saves the round trip per request, and
    a connection that died while in use fails its request once (the pool then replaces every
    connection older than the failure).
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    kwargs.setdefault("pool_pre_ping", ping_after_idle is None)
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
    engine = create_engine(parsed, **kwargs)
    if ping_after_idle is not None:
        _ping_when_idle(engine, ping_after_idle)
    return engine


def _ping_when_idle(engine: Engine, seconds: float) -> None:
    """Ping a connection at checkout only when it has been idle `seconds` or more; a failed
    ping makes the pool replace it (SQLAlchemy's `DisconnectionError` protocol)."""

    @event.listens_for(engine, "checkin")
    def returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def taken(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < seconds:
            return  # new, or used a moment ago
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(queries["ping"])
        except psycopg2.Error as exc:
            raise DisconnectionError(str(exc)) from exc


def new_timer_arrays(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The parameters of a statement that inserts new timers from parallel arrays
    (`insert_timers`, `insert_occurrences`), from their rows (`NewTimer.row_values`), the JSON as
    text."""
    return {
        "ids": [row["id"] for row in rows],
        "execute_ats": [row["execute_at"] for row in rows],
        "callback_types": [row["callback_type"] for row in rows],
        "callback_configs": [_json_text(row["callback_config"]) for row in rows],
        "metadatas": [_json_text(row["metadata"]) for row in rows],
        "retries": [_json_text(row["retry"]) for row in rows],
        "owners": [row["owner"] for row in rows],
    }


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


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


def decoded(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row read on a caller's connection: its JSON may come back as text, its id as text."""
    result = dict(row)
    for name in ("callback_config", "metadata", "retry", "history"):
        if isinstance(result.get(name), str):
            result[name] = load_json(result[name])
    if isinstance(result.get("id"), str):
        result["id"] = uuid.UUID(result["id"])
    return result


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


class Connected:
    """What every part of the PostgreSQL store shares: one engine, and how a method runs on it."""

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
            conn.exec_driver_sql(queries["begin"])
            try:
                yield conn
            except BaseException:
                with suppress(Exception):  # the connection may be gone: keep the first error
                    conn.exec_driver_sql(queries["rollback"])
                raise
            conn.exec_driver_sql(queries["commit"])


# -- pieces of statements ---------------------------------------------------------------------


def seconds(value: float) -> Any:
    """An interval of `value` seconds, bound as a parameter."""
    return func.make_interval(0, 0, 0, 0, 0, 0, bindparam(None, value, type_=Float()))


def interval(amount: Any) -> Any:
    """An interval of `amount` seconds (a column or expression)."""
    return func.make_interval(0, 0, 0, 0, 0, 0, amount)


def unnest(name: str, **columns: Any) -> Any:
    """A table of rows from parallel arrays (`unnest(:name_a, :name_b, …)`), each column
    `a=type`; the arrays are bound when the statement runs. Its statement is the same however
    many rows it holds, so the hot statements built on it are built once and compiled once."""
    arrays = [bindparam(f"{name}_{n}", type_=ARRAY(t)) for n, t in columns.items()]
    return (
        func.unnest(*arrays)
        .table_valued(*(column(n, t) for n, t in columns.items()))
        .render_derived(name=name)
    )


def owned_by(owner: str | None) -> list[Any]:
    """The condition that a timer is this owner's (none for None: every owner's)."""
    return [] if owner is None else [timers.c.owner == owner]
