"""scale and scale-10m: the steady workload beside many pending rows due over the next 30 days
(1,000,000 by default, `--scale-pending`; 10,000,000 for scale-10m; timers only), and the
scheduler's load statement over them.

The rows are filled as the page and retention workloads fill theirs (bench.workloads.filling: one
`INSERT … SELECT` from generate_series per million rows, on a database at migration 0007, then
migrated to head and VACUUM ANALYZEd): created evenly over the last 7 days (UUIDv7 ids of their
creation), each pending and due 1 to 30 days ahead, so none comes due during a run. With
`--scale-keep` they are filled once into a template database (bench_scale_template) kept between
runs, and each run works on a copy of it (`CREATE DATABASE … TEMPLATE`, file by file); the
template is reused while it holds as many rows and its earliest timer is at least an hour ahead
(a fill stays usable for about 23 hours).

Targets (bench.report): the load statement at most 50 ms, the scheduler's peak RSS at most 150 MB,
and p99 lateness within 20% of the steady row (the same load on an empty table) of the same run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from bench.harness import Bench, copy_database, database_exists, drop_database, say
from bench.workloads.filling import Mix, filled_database
from tests.support.plans import statements_sent
from timers.config import settings_from_env
from timers.migrations import upgrade
from timers.storage import RecoveryRules
from timers.store import TimerStore, database_engine

TEMPLATE = "bench_scale_template"
FRESH_FOR = timedelta(hours=1)  # the template's earliest timer must be this far ahead


def scale_database(bench: Bench, name: str, rows: int, keep: bool) -> tuple[str, str]:
    """Database `name` holding `rows` pending timers due 1 to 30 days ahead (and nothing else);
    with `keep`, a copy of the kept template (filled first when it is missing or stale). Returns
    its URL and a note saying where the rows came from and what that took."""
    if keep and template_ready(bench, rows):
        url, took = copy_database(bench, TEMPLATE, name)
        upgrade(url)  # a no-op at head; migrates the kept rows if the schema moved on
        return url, f"{rows:,} pending rows: the kept {TEMPLATE}, copied in {took:.0f}s"
    began = time.monotonic()
    now = datetime.now(UTC)
    target = TEMPLATE if keep else name
    url, parts = filled_database(bench, target, [(rows, now - timedelta(days=7), now, Mix(far=0))])
    engine = database_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f"COMMENT ON TABLE timers IS '{marker(rows)}'"))
    finally:
        engine.dispose()
    steps = ", ".join(f"{k.removesuffix('_s')} {v:.0f}s" for k, v in parts.items())
    note = f"{rows:,} pending rows inserted in {time.monotonic() - began:.0f}s ({steps})"
    if keep:
        url, took = copy_database(bench, TEMPLATE, name)
        note += f", kept as {TEMPLATE} and copied in {took:.0f}s"
    return url, note


def marker(rows: int) -> str:
    return f"bench scale fill: {rows} pending rows"


def template_ready(bench: Bench, rows: int) -> bool:
    """Whether the kept template holds `rows` pending rows of ours, the earliest far enough ahead."""
    if not database_exists(bench, TEMPLATE):
        return False
    engine = database_engine(bench.services.database_url(TEMPLATE))
    try:
        with engine.connect() as conn:
            comment = conn.execute(
                text("SELECT obj_description('timers'::regclass, 'pg_class')")
            ).scalar()
            earliest = conn.execute(
                text("SELECT min(execute_at) FROM timers WHERE status = 'pending'")
            ).scalar()
    finally:
        engine.dispose()
    fresh = earliest is not None and earliest > datetime.now(UTC) + FRESH_FOR
    if comment == marker(rows) and fresh:
        say(f"scale: reusing the kept {TEMPLATE} ({rows:,} rows)")
        return True
    say(f"scale: {TEMPLATE} holds {comment!r}, earliest {earliest}: filling it afresh")
    drop_database(bench, TEMPLATE)
    return False


def loader_query_plan(store: TimerStore) -> tuple[float, int, bool]:
    """The scheduler's load statement as its loader sends it with the default settings (the `fire`
    policy: no lower bound; stranded timers recovered and the schedules' sweep in the same
    statement), run under EXPLAIN ANALYZE in a transaction rolled back: (execution ms, rows,
    whether the partial index on pending `execute_at` serves it)."""
    settings = settings_from_env({})  # the defaults
    now = datetime.now(UTC)
    with statements_sent(store) as sent:
        store.load_near_term(
            None,
            now + timedelta(seconds=settings.lookahead),
            recovery=RecoveryRules(settings.enqueue_timeout, settings.delivery_lease, True),
            schedules_within=settings.lookahead,
        )
    seen = [(st, p) for st, p in sent if st.lstrip().upper().startswith(("SELECT", "WITH"))]
    statement, params = seen[-1]
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params)
        found = cursor.fetchone()
        raw.rollback()
    finally:
        raw.close()
    plan = found[0][0] if found else {}
    return (
        float(plan.get("Execution Time", 0.0)),
        int(plan.get("Plan", {}).get("Actual Rows", 0)),
        "ix_timers_pending_execute_at" in str(plan),
    )
