"""Adopting a database that mca-timer (Rocket-Innovation/mca-timer, the seed's system) laid.

Its two sqlx migrations leave a `timers` table that is ours before our first revision, in another
spelling: the same columns but `attempts` and `claimed_at`, `status` and `callback_type` as
VARCHAR, a default id (`gen_random_uuid()`), the checks `valid_status`, `valid_callback_type`
(`http`, `nats`: no `celery`) and `future_execute_at` (`execute_at > created_at`, which a retry
or a redrive may break), its own indexes and its `update_timers_updated_at` trigger.

`adopt` brings that table to exactly what revision 0001 makes, in one transaction, and stamps
0001; the normal upgrade then runs the rest. Every row is kept with its id and status. Rows its
API could hold but ours could not read are put in our form: metadata that is not an object is
kept under `"value"`, header values that are not strings (which mca-timer never sent) are
dropped. A timer it left `executing` counts as claimed when it was last updated, so recovery
fires it again (delivery is at least once). sqlx's `_sqlx_migrations` is left as it is. A
`timers` table that is neither ours nor mca-timer's is refused, with nothing changed.
"""

from __future__ import annotations

import logging
from typing import Any

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from timers.store import database_engine, database_errors

log = logging.getLogger(__name__)

REVISION = "0001"  # the revision whose schema the adopted table gets
# information_schema's data types of the table its two migrations leave.
MCA_COLUMNS = {
    "id": "uuid",
    "created_at": "timestamp with time zone",
    "updated_at": "timestamp with time zone",
    "execute_at": "timestamp with time zone",
    "status": "character varying",
    "last_error": "text",
    "executed_at": "timestamp with time zone",
    "metadata": "jsonb",
    "callback_type": "character varying",
    "callback_config": "jsonb",
}
LOCK_TIMEOUT = "10s"
LOCK_NOT_AVAILABLE = "55P03"


class Refused(Exception):
    """A database this module will not touch; the message says why (nothing was changed)."""


_COLUMNS = text(
    "SELECT column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND table_name = 'timers'"
)
_SQLX_VERSIONS = text("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
_BY_STATUS = text("SELECT status, count(*) AS n FROM timers GROUP BY status ORDER BY status")

# Rows in our form: an object (or SQL NULL) for metadata, string header values.
_METADATA = text(
    "UPDATE timers SET metadata = CASE WHEN metadata = 'null'::jsonb THEN NULL "
    "ELSE jsonb_build_object('value', metadata) END "
    "WHERE jsonb_typeof(metadata) <> 'object'"
)
_HEADERS = text(
    """
    UPDATE timers SET callback_config = jsonb_set(callback_config, '{headers}', CASE
        WHEN jsonb_typeof(callback_config->'headers') = 'object' THEN coalesce(
            (SELECT jsonb_object_agg(h.key, h.value)
             FROM jsonb_each(callback_config->'headers') AS h
             WHERE jsonb_typeof(h.value) = 'string'), '{}'::jsonb)
        ELSE 'null'::jsonb END)
    WHERE jsonb_typeof(callback_config->'headers') NOT IN ('object', 'null')
       OR EXISTS (SELECT 1 FROM jsonb_each(CASE WHEN jsonb_typeof(callback_config->'headers')
                  = 'object' THEN callback_config->'headers' END) AS h
                  WHERE jsonb_typeof(h.value) <> 'string')
    """
)
# What revision 0001 makes, from what mca-timer's migrations made (its trigger is gone already):
# the columns and checks, then (after the rows are in our form) the indexes and the trigger.
_COLUMNS_AND_CHECKS = (
    "ALTER TABLE timers DROP CONSTRAINT IF EXISTS valid_status, "
    "DROP CONSTRAINT IF EXISTS valid_callback_type, "
    "DROP CONSTRAINT IF EXISTS future_execute_at",
    "DROP INDEX IF EXISTS idx_timers_execute_at_status, idx_timers_status, "
    "idx_timers_created_at, idx_timers_callback_type",
    "ALTER TABLE timers ALTER COLUMN id DROP DEFAULT, "
    "ALTER COLUMN status TYPE text, ALTER COLUMN status SET DEFAULT 'pending', "
    "ALTER COLUMN callback_type TYPE text, "
    "ALTER COLUMN callback_type DROP DEFAULT, "
    "ADD COLUMN attempts integer NOT NULL DEFAULT 0, "
    "ADD COLUMN claimed_at timestamp with time zone, "
    "ADD CONSTRAINT ck_timers_status "
    "CHECK (status IN ('pending', 'executing', 'completed', 'failed', 'canceled'))",
)
_INDEXES_AND_TRIGGER = (
    "CREATE INDEX ix_timers_pending_execute_at ON timers (execute_at) WHERE status = 'pending'",
    "CREATE INDEX ix_timers_status_created_at ON timers (status, created_at)",
    """
    CREATE FUNCTION timers_touch_updated_at() RETURNS trigger AS $$
    BEGIN
        NEW.updated_at := now();
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER timers_touch_updated_at BEFORE UPDATE ON timers "
    "FOR EACH ROW EXECUTE FUNCTION timers_touch_updated_at()",
)
# Left executing when it stopped: claimed then, so recovery fires it again.
_EXECUTING = text(
    "UPDATE timers SET claimed_at = updated_at, attempts = 1 WHERE status = 'executing'"
)
# Its trigger function goes too, unless some other table's trigger uses it.
_DROP_ITS_FUNCTION = text(
    """
    DO $$ BEGIN
        IF to_regprocedure('update_updated_at_column()') IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM pg_trigger
            WHERE tgfoid = to_regprocedure('update_updated_at_column()')) THEN
            DROP FUNCTION update_updated_at_column();
        END IF;
    END $$
    """
)


def adopt(database_url: str, script: ScriptDirectory) -> list[str]:
    """Adopt mca-timer's `timers` table if this database has one and no Alembic version yet;
    returns what was found and done (nothing: there was nothing to adopt). Raises Refused for a
    `timers` table it does not recognise, StoreError / StoreUnavailable when the database
    refuses (then nothing has changed either)."""
    engine = database_engine(database_url, pool_pre_ping=False, isolation_level="READ COMMITTED")
    try:
        with database_errors(), engine.begin() as conn:
            if not _is_foreign(conn):
                return []
            _recognise(conn)
            _lock(conn)
            found = _found(conn)
            done = _reshape(conn)
            MigrationContext.configure(conn).stamp(script, REVISION)
    finally:
        engine.dispose()
    return [found, done]


def _is_foreign(conn: Connection) -> bool:
    """A `timers` table that Alembic did not make (no version table beside it)."""
    tables = conn.execute(
        text("SELECT to_regclass('timers') IS NOT NULL, to_regclass('alembic_version') IS NOT NULL")
    ).one()
    return bool(tables[0] and not tables[1])


def _lock(conn: Connection) -> None:
    """Take the table from everyone else until this transaction ends: a running mca-timer (or
    anything else using it) is waited for LOCK_TIMEOUT, then refused."""
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    try:
        conn.execute(text("LOCK TABLE timers IN ACCESS EXCLUSIVE MODE"))
    except DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) != LOCK_NOT_AVAILABLE:
            raise
        raise Refused(
            f"the timers table stayed in use for {LOCK_TIMEOUT}: stop mca-timer (and anything "
            "else using it) first; nothing was changed"
        ) from None


def _recognise(conn: Connection) -> None:
    """Refuse a table whose columns are not exactly those mca-timer's migrations leave."""
    columns = {name: kind for name, kind in conn.execute(_COLUMNS).all()}
    if columns != MCA_COLUMNS:
        missing = sorted(set(MCA_COLUMNS) - set(columns))
        extra = sorted(set(columns) - set(MCA_COLUMNS))
        retyped = sorted(c for c in set(columns) & set(MCA_COLUMNS) if columns[c] != MCA_COLUMNS[c])
        differences = "; ".join(
            f"{label}: {', '.join(names)}"
            for label, names in (("missing", missing), ("unexpected", extra), ("types", retyped))
            if names
        )
        raise Refused(
            "the database has a `timers` table that is neither ours (no alembic_version) nor "
            f"mca-timer's ({differences}); nothing was changed. Point DATABASE_URL at another "
            "database, or move that table away."
        )


def _found(conn: Connection) -> str:
    has_sqlx = conn.execute(text("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")).scalar()
    versions = [str(v) for v in conn.execute(_SQLX_VERSIONS).scalars()] if has_sqlx else []
    counts = {status: int(n) for status, n in conn.execute(_BY_STATUS).all()}
    by_status = ", ".join(f"{n:,} {status}" for status, n in counts.items())
    return (
        f"found mca-timer's timers table (sqlx migrations {', '.join(versions) or 'not recorded'})"
        f" with {sum(counts.values()):,} timers{f' ({by_status})' if by_status else ''}"
    )


def _reshape(conn: Connection) -> str:
    conn.execute(text("DROP TRIGGER IF EXISTS update_timers_updated_at ON timers"))
    for statement in _COLUMNS_AND_CHECKS:
        conn.execute(text(statement))
    changed: dict[str, Any] = {
        'whose metadata was not an object, now under "value"': conn.execute(_METADATA),
        "whose headers were not all strings, those dropped": conn.execute(_HEADERS),
        "left executing, to be fired again": conn.execute(_EXECUTING),
    }
    for statement in _INDEXES_AND_TRIGGER:
        conn.execute(text(statement))
    conn.execute(_DROP_ITS_FUNCTION)
    kept = "".join(
        f"; {result.rowcount:,} {what}" for what, result in changed.items() if result.rowcount
    )
    return (
        f"adopted it as revision {REVISION}, every id and status kept{kept}; its checks "
        "(valid_status, valid_callback_type, future_execute_at) and updated_at trigger replaced "
        "by ours; _sqlx_migrations left as it is"
    )
