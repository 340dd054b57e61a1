"""schedules (opt-in, `--only schedules`): recurring schedules against plain `celery beat`.

The herd: `count` schedules (default 10,000) of kind `celery`, each `* * * * *` calling the user's
task (bench/user_app.py) with its number, measured over `minutes` minute boundaries (default 3)
after all are made (through the Python API, several threads): all at :00 (jitter 0), then the same
with `jitter` 30 s. Against plain `celery beat` (bench/beat_app.py: the same entries, each a
crontab every minute calling the same task with the same number) run once, with Celery's default
scheduler and a schedule file of its own. The same user worker runs the task in every cell.

Each slot is one row: timers by occurrence (task id = timer id; lateness is measured from its
`execute_at`, the slot itself at the herd, slot + jitter otherwise); beat by (entry, minute), the
minute being the one the send or run falls in (one over 60 s late would be counted against the
next minute). `twice` counts duplicates, `never` the slots not run within 60 s (+ jitter) of the
last. Each system has a `sent` row (when its scheduler handed the task to the broker) and a `ran`
row (when the user's worker ran it), and the `floor` rows are the worker's own publisher handing
the herd over with no scheduler and no database, and the user's worker draining it
(bench/workloads/herd.py). `--schedules-herds` picks among herd, jitter, beat and floor.

Stored: `stored` schedules (default 100,000) of one principal, each `0 3 * * *` (stored, not
firing): the creation rate of the first `rate_sample` through the Python API (8 threads) and of
`api_sample` through `POST /schedules` (one client), the rest copied in SQL (schedule rows only);
then the scheduler's load statement with its schedule sweep, run under EXPLAIN ANALYZE (target
<= 50 ms), and the peak RSS of a scheduler loading every 5 s for 30 s (target <= 150 MB).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from sqlalchemy import event, text

from bench.cell import Cell
from bench.harness import API_KEY, Bench, say, scheduler_usage, start_api
from bench.workloads.herd import HERDS, THREADS, create_many, run_herds, stored_config, task_env
from timers.schema import schedules as schedules_table
from timers.storage import RecoveryRules
from timers.store import TimerStore, database_engine

DAILY = "0 3 * * *"


@dataclass
class SchedulesReport:
    cells: list[Cell] = field(default_factory=list)
    stored: int = 0
    python_per_s: float = 0.0
    rest_per_s: float = 0.0
    load_ms: float | None = None
    load_rows: int = 0
    rss_mb: float | None = None
    error: str | None = None


def run_schedules(
    bench: Bench,
    count: int,
    minutes: int,
    stored: int,
    herds: tuple[str, ...] = HERDS,
    jitter: float = 30.0,
) -> SchedulesReport:
    report = SchedulesReport()
    if count > 0:
        report.cells = run_herds(bench, count, minutes, herds, jitter)
    if stored > 0:
        say(f"schedules: {stored} stored …")
        try:
            _stored(bench, stored, report)
        except Exception as exc:  # the herd's rows are still worth printing
            report.error = f"stored schedules: {exc!r}"
        finally:
            bench.stop_all()
    return report


def _stored(bench: Bench, stored: int, report: SchedulesReport) -> None:
    db_url = bench.database("bench_schedules_stored")
    env = task_env(bench, db_url)
    rate_sample = min(stored, 5000)
    api_sample = min(stored - rate_sample, 1000)
    report.python_per_s = create_many(env, range(rate_sample), DAILY, 0.0, stored=True)
    base = start_api(bench, db_url, "api-schedules")
    began = time.perf_counter()
    with requests.Session() as http:
        http.headers["X-API-Key"] = API_KEY
        for n in range(api_sample):
            body = {"cron": DAILY, "callback_type": "http", "callback_config": stored_config(n)}
            answer = http.post(f"{base}/schedules", json=body, timeout=30)
            answer.raise_for_status()
    if api_sample:
        report.rest_per_s = api_sample / (time.perf_counter() - began)
    bench.stop_all()
    store = TimerStore(database_engine(db_url))
    try:
        _copy_schedules(store, stored - rate_sample - api_sample)
        with store.engine.connect() as conn:
            report.stored = int(conn.execute(text("SELECT count(*) FROM schedules")).scalar_one())
            conn.execute(text("VACUUM ANALYZE schedules"))
            conn.execute(text("VACUUM ANALYZE timers"))
        report.load_ms, report.load_rows = _explain_load(store)
    finally:
        store.engine.dispose()
    scheduler = bench.start_scheduler({**env, "TIMERS_LOAD_INTERVAL": "5"}, "schedules-stored")
    try:
        time.sleep(30)
        rss = Cell("timers", "schedules")
        scheduler_usage(rss, scheduler)
        report.rss_mb = rss.scheduler_peak_rss_mb
    finally:
        bench.stop_all()


def _copy_schedules(store: TimerStore, copies: int) -> None:
    """`copies` more schedules like the first one (new ids, no name), in one statement."""
    if copies <= 0:
        return
    kept = [c.name for c in schedules_table.columns if c.name not in ("id", "name")]
    columns = ", ".join(kept)
    with store.engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO schedules (id, name, {columns})"  # noqa: S608 - column names
                f" SELECT gen_random_uuid(), NULL, {columns}"
                " FROM (SELECT * FROM schedules ORDER BY id LIMIT 1) AS one,"
                " generate_series(1, :copies)"
            ),
            {"copies": copies},
        )


def _explain_load(store: TimerStore) -> tuple[float | None, int]:
    """The scheduler's load statement (its recovery and its schedule sweep included) as the
    loader sends it, run under EXPLAIN ANALYZE in a transaction rolled back: its execution time
    in ms and the rows it returned."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", capture)
    now = datetime.now(UTC)
    try:
        store.load_near_term(
            now - timedelta(seconds=300),
            now + timedelta(seconds=60),
            recovery=RecoveryRules(enqueue_timeout=60.0, lease=60.0, queue_idle=True),
            schedules_within=60.0,
        )
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    if not seen:
        return None, 0
    statement, params = seen[-1]
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
        found = cursor.fetchone()
        plan = found[0][0] if found else {}
        raw.rollback()
    finally:
        raw.close()
    if not plan:
        return None, 0
    return float(plan["Execution Time"]), int(plan["Plan"].get("Actual Rows", 0))


def schedules_lines(report: SchedulesReport) -> str:
    by = {c.variant: c for c in report.cells if c.system == "timers"}
    lines = []
    sent, ran = by.get("herd:sent"), by.get("herd:ran")
    if sent and ran:
        ok = sent.p99_ms <= 1000 and ran.twice == 0 and ran.never == 0
        lines.append(
            f"target schedules/timers :00 herd handed to the broker p99 <= 1 s, 0 duplicates, "
            f"0 missed: {'met' if ok else 'MISSED'} (sent p99 {sent.p99_ms:.0f} ms, ran p99 "
            f"{ran.p99_ms:.0f} ms, {ran.twice} duplicates, {ran.never} missed)"
        )
    if report.error:
        lines.append(f"failed: {report.error}")
    if report.stored:
        load = "-" if report.load_ms is None else f"{report.load_ms:.2f} ms"
        rss = "-" if report.rss_mb is None else f"{report.rss_mb:.0f} MB"
        lines += [
            f"{report.stored:,} stored schedules: created {report.python_per_s:,.0f}/s through the "
            f"Python API ({THREADS} threads), {report.rest_per_s:,.0f}/s through POST /schedules "
            "(one client); the rest copied in SQL",
            f"target load statement with the schedule sweep <= 50 ms: "
            f"{'met' if report.load_ms is not None and report.load_ms <= 50 else 'MISSED'} "
            f"({load}, EXPLAIN ANALYZE, {report.load_rows} rows)",
            f"target scheduler RSS <= 150 MB: "
            f"{'met' if report.rss_mb is not None and report.rss_mb <= 150 else 'MISSED'} ({rss})",
        ]
    return "\n".join(lines)
