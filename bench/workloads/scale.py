"""scale: the steady workload over 1,000,000 pending rows due over the next 30 days (timers only),
and the plan of the scheduler's loader query over them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from timers.store import TimerStore


def fill_background(store: TimerStore, rows: int) -> None:
    """`rows` pending timers spread over the next 30 days (not due during the run)."""
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE timers DISABLE TRIGGER timers_notify_change"))
        conn.execute(
            text(
                "INSERT INTO timers (id, execute_at, callback_type, callback_config, status) "
                "SELECT gen_random_uuid(), now() + interval '1 hour' + random() * interval '30 days', "
                '\'http\', \'{"type": "http", "url": "http://127.0.0.1:9/"}\', \'pending\' '
                "FROM generate_series(1, :n)"
            ),
            {"n": rows},
        )
        conn.execute(text("ALTER TABLE timers ENABLE TRIGGER timers_notify_change"))
    with store.engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE timers"))


def loader_query_plan(store: TimerStore) -> tuple[float, int, bool]:
    """EXPLAIN ANALYZE of the scheduler's own loader query as the `fire` policy runs it (no lower
    bound): (execution ms, rows, whether the partial index serves it)."""
    from sqlalchemy.dialects import postgresql

    from timers.store import near_term_query

    query = near_term_query(None, datetime.now(UTC) + timedelta(seconds=60), 100_000)
    sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with store.engine.connect() as conn:
        plan = [r[0] for r in conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))]
    ms = next(float(line.split(":")[1].split()[0]) for line in plan if "Execution Time" in line)
    rows = next(
        int(line.split("actual time=")[1].split("rows=")[1].split()[0])
        for line in plan
        if "actual time=" in line
    )
    return ms, rows, any("ix_timers_pending_execute_at" in line for line in plan)
