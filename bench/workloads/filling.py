"""Filling a database with millions of timers by server-side SQL, for the page and retention
workloads."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import text

from bench.harness import Bench, drop_database, say
from timers.migrations import upgrade
from timers.store import database_engine

CHUNK = 1_000_000  # rows per INSERT … SELECT
FILLERS = 2  # INSERT … SELECT statements at a time


# -- filling -----------------------------------------------------------------------------------

# One statement fills rows lo..hi of a table of `n`: created_at evenly from :t0 on, every :step
# seconds (row i at t0 + i * step), so ids (UUIDv7 of created_at) and created_at grow together.
# r1 picks the status (canceled below :canceled, failed below :canceled + :failed, pending from
# :far on, due 1 to 30 days ahead; a row whose execute_at is still ahead is pending too), r2 the
# delay from creation to execute_at (r2² × 2 h), r3 when a canceled one was canceled, r4 the kind.
FILL = text(
    """
    INSERT INTO timers (id, created_at, updated_at, execute_at, executed_at, started_at,
                        claimed_at, callback_type, callback_config, status, last_error, metadata,
                        attempts, delivery_attempts, history)
    SELECT
        (lpad(to_hex(ms), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
        created_at,
        CASE status
            WHEN 'pending' THEN created_at
            WHEN 'canceled' THEN created_at + (execute_at - created_at) * r3
            ELSE execute_at + interval '60 milliseconds'
        END,
        execute_at,
        CASE WHEN finished THEN execute_at + interval '60 milliseconds' END,
        CASE WHEN finished THEN execute_at + interval '10 milliseconds' END,
        CASE WHEN finished THEN execute_at END,
        kind,
        CAST(CASE kind
            WHEN 'nats' THEN '{"type":"nats","subject":"orders.expired","payload":{"order":' || i
                             || '}}'
            ELSE '{"type":"http","url":"https://hooks.example.com/t' || tenant
                 || '/expired","payload":{"order":' || i || '}}'
        END AS jsonb),
        status,
        CASE WHEN status = 'failed' THEN 'HTTP 500' END,
        CAST('{"tenant":"t' || tenant || '"}' AS jsonb),
        CASE WHEN finished THEN 1 ELSE 0 END,
        CASE WHEN finished THEN 1 ELSE 0 END,
        CASE status
            WHEN 'completed' THEN jsonb_set(CAST(:completed_history AS jsonb),
                '{0,started_at}', to_jsonb(execute_at + interval '10 milliseconds'))
            WHEN 'failed' THEN jsonb_set(CAST(:failed_history AS jsonb),
                '{0,started_at}', to_jsonb(execute_at + interval '10 milliseconds'))
            ELSE '[]'
        END
    FROM (
        SELECT *, status IN ('completed', 'failed') AS finished FROM (
            SELECT *,
                CASE
                    WHEN r1 < :canceled THEN 'canceled'
                    WHEN r1 >= :far OR execute_at > now() THEN 'pending'
                    WHEN r1 < :canceled + :failed THEN 'failed'
                    ELSE 'completed'
                END AS status
            FROM (
                SELECT *,
                    CASE WHEN r1 >= :far THEN now() + interval '1 day' + r2 * interval '29 days'
                         ELSE created_at + r2 * r2 * interval '2 hours' END AS execute_at,
                    CASE WHEN r4 < :nats THEN 'nats' ELSE 'http' END AS kind
                FROM (
                    SELECT i, to_timestamp(s) AS created_at, (s * 1000)::bigint AS ms,
                           random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                           floor(random() * 1000)::int AS tenant, md5(random()::text) AS h
                    FROM (
                        SELECT i, CAST(:t0 AS float8) + i * CAST(:step AS float8) AS s
                        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g(i)
                    ) g
                    OFFSET 0  -- a fence: the columns above are computed once
                ) a
                OFFSET 0
            ) b
            OFFSET 0
        ) c
        OFFSET 0
    ) d
    """
)


# The history of a finished timer: one attempt (its started_at set per row).
HISTORY = {
    outcome: json.dumps(
        [
            {
                "attempt": 1,
                "started_at": "",
                "duration_ms": 50,
                "outcome": outcome,
                "status": status,
                "error": error,
            }
        ]
    )
    for outcome, status, error in (("completed", 200, None), ("failed", 500, "HTTP 500"))
}


@dataclass
class Mix:
    canceled: float = 0.0
    failed: float = 0.0
    far: float = 1.0  # r1 from here on: pending, due 1 to 30 days ahead (1.0: none)
    nats: float = 0.0


def fill(url: str, rows: int, start: datetime, end: datetime, mix: Mix) -> None:
    """`rows` timers created evenly from `start` to `end`, CHUNK rows a statement, FILLERS
    statements at a time (the change trigger off meanwhile: no notifications for the pending
    ones)."""
    engine = database_engine(url, pool_size=FILLERS)
    step = (end - start).total_seconds() / rows
    chunks = [(lo, min(rows, lo + CHUNK) - 1) for lo in range(0, rows, CHUNK)]

    def one(chunk: tuple[int, int]) -> None:
        began = time.monotonic()
        params = {
            "lo": chunk[0],
            "hi": chunk[1],
            "t0": start.timestamp(),
            "step": step,
            "completed_history": HISTORY["completed"],
            "failed_history": HISTORY["failed"],
            **asdict(mix),
        }
        with engine.begin() as conn:
            conn.execute(FILL, params)
        say(f"  rows {chunk[0]:,}..{chunk[1]:,} in {time.monotonic() - began:.0f}s")

    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE timers DISABLE TRIGGER timers_notify_change"))
        with ThreadPoolExecutor(FILLERS) as pool:
            list(pool.map(one, chunks))
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE timers ENABLE TRIGGER timers_notify_change"))
    finally:
        engine.dispose()


def vacuum_analyze(url: str) -> None:
    engine = database_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE timers"))
    finally:
        engine.dispose()


Fill = tuple[int, datetime, datetime, Mix]  # rows, created from, created until, their mix


def filled_database(bench: Bench, name: str, fills: list[Fill]) -> tuple[str, dict[str, float]]:
    """A fresh database `name` holding the timers of `fills`: created at migration 0007, filled,
    then migrated to head (0008 builds its indexes and 0009 the labels of the filled table, as on
    a user's) and VACUUM ANALYZEd. Returns its URL and the seconds each step took."""
    drop_database(bench, name)
    bench.services.admin_execute(f'CREATE DATABASE "{name}"')
    url = bench.services.database_url(name)
    parts: dict[str, float] = {}
    upgrade(url, "0007")
    say(f"{name}: inserting {sum(f[0] for f in fills):,} rows …")
    t = time.monotonic()
    for rows, start, end, mix in fills:
        fill(url, rows, start, end, mix)
    parts["insert_s"] = time.monotonic() - t
    say(f"{name}: migrating to head (0008 builds its indexes, 0009 the labels) …")
    t = time.monotonic()
    upgrade(url)
    parts["migrate_s"] = time.monotonic() - t
    say(f"{name}: VACUUM ANALYZE …")
    t = time.monotonic()
    vacuum_analyze(url)
    parts["vacuum_analyze_s"] = time.monotonic() - t
    return url, parts
