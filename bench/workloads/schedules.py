"""schedules (opt-in, `--only schedules`): recurring schedules against plain `celery beat`.

The herd: `count` schedules (default 10,000) of kind `celery`, each `* * * * *` calling the user's
task (bench/user_app.py) with its number, measured over `minutes` minute boundaries (default 3)
after all are made (through the Python API, several threads): all at :00 (jitter 0), then the same
with `jitter` 30 s. Against plain `celery beat` (bench/beat_app.py: the same entries, each a
crontab every minute calling the same task with the same number) run once, with Celery's default
scheduler and a schedule file of its own. The same user worker runs the task in every cell.

Each slot is one row: timers by occurrence (task id = timer id; lateness is the run minus its
`execute_at`, the slot itself at the herd, slot + jitter otherwise); beat by (entry, minute), the
minute being the one the run falls in (a run over 60 s late would be counted against the next
minute). `twice` counts duplicates, `never` the slots not run within 60 s (+ jitter) of the last.

Stored: `stored` schedules (default 100,000) of one principal, each `0 3 * * *` (stored, not
firing): the creation rate of the first `rate_sample` through the Python API (8 threads) and of
`api_sample` through `POST /schedules` (one client), the rest copied in SQL (schedule rows only);
then the scheduler's load statement with its schedule sweep, run under EXPLAIN ANALYZE (target
<= 50 ms), and the peak RSS of a scheduler loading every 5 s for 30 s (target <= 150 MB).
"""

from __future__ import annotations

import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import redis
import requests
from sqlalchemy import event, text

from bench.cell import Cell, summarize
from bench.harness import API_KEY, BIN, Bench, say, scheduler_usage, start_api
from timers.schema import schedules as schedules_table
from timers.storage import RecoveryRules
from timers.store import TimerStore, database_engine

THREADS = 8
LATE_WAIT = 60.0  # seconds after the last slot's due time before a slot counts as never
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
    bench: Bench, count: int, minutes: int, stored: int, jitter: float = 30.0
) -> SchedulesReport:
    report = SchedulesReport()
    herds = (("timers", 0.0), ("timers", jitter), ("celery-beat", 0.0)) if count > 0 else ()
    for system, spread in herds:
        say(f"schedules: {count} every minute, {system}, jitter {spread:.0f}s …")
        if system == "timers":
            report.cells.append(_herd(bench, count, minutes, spread))
        else:
            report.cells.append(_plain_beat(bench, count, minutes))
    if stored > 0:
        say(f"schedules: {stored} stored …")
        try:
            _stored(bench, stored, report)
        except Exception as exc:  # the herd's rows are still worth printing
            report.error = f"stored schedules: {exc!r}"
        finally:
            bench.stop_all()
    return report


def _env(bench: Bench, url: str) -> dict[str, str]:
    from bench import user_app

    return {
        **bench.env(url),
        "TIMERS_TASK_BROKER_URL": bench.user_broker,
        "TIMERS_CELERY_TASKS": user_app.TASK,
        "TIMERS_CELERY_QUEUES": user_app.QUEUE,
    }


def _config(n: int) -> dict[str, Any]:
    from bench import user_app

    return {"type": "celery", "task": user_app.TASK, "args": [n], "queue": user_app.QUEUE}


def _stored_config(n: int) -> dict[str, Any]:
    """The stored schedules' callback: they never fire in the run, and the API (started without
    a task broker) takes `http` callbacks."""
    return {"type": "http", "url": "http://127.0.0.1:9/stored", "payload": {"n": n}}


def _create_many(
    env: dict[str, str], numbers: range, cron: str, jitter: float, stored: bool = False
) -> float:
    """Create one schedule per number through the Python API, THREADS at a time; per second."""
    from timers.config import settings_from_env
    from timers.library import Timers

    library = Timers(settings=settings_from_env(env))
    began = time.perf_counter()
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            list(
                pool.map(
                    lambda n: library.create_schedule(
                        *(("http", _stored_config(n)) if stored else ("celery", _config(n))),
                        cron=cron,
                        jitter=jitter,
                    ),
                    numbers,
                )
            )
    finally:
        library.close()
    return len(numbers) / (time.perf_counter() - began)


def _boundaries(after: float, minutes: int) -> list[float]:
    """The first `minutes` minute boundaries at least 10 s after `after`."""
    first = math.ceil((after + 10) / 60) * 60
    return [first + 60 * k for k in range(minutes)]


def _wait_runs(bench: Bench, expected: int, since: float, last: float, until: float) -> float:
    """Wait past the unix time `last`, then until `expected` runs at or after `since` are recorded
    or the unix time `until`; when it stopped."""
    from bench import user_app

    while time.time() < last:
        time.sleep(1.0)
    while time.time() < until:
        runs = user_app.runs(bench.user_broker)
        if sum(1 for run in runs if float(run["at"]) >= since) >= expected:
            break
        time.sleep(2.0)
    time.sleep(2.0)  # second runs come together with the first ones
    return time.time()


def _herd(bench: Bench, count: int, minutes: int, jitter: float) -> Cell:
    from bench import user_app

    tag = f"schedules-{'jitter' if jitter else 'herd'}"
    cell = Cell("timers", "schedules", variant="jitter" if jitter else "herd")
    for url in (bench.broker, bench.user_broker):
        redis.Redis.from_url(url).flushdb()
    db_url = bench.database(f"bench_{tag.replace('-', '_')}")
    env = _env(bench, db_url)
    store = TimerStore(database_engine(db_url))
    try:
        bench.start_user_worker(tag)
        bench.start_worker("timers", env, tag)
        scheduler = bench.start_scheduler(env, tag)
        rate = _create_many(env, range(count), "* * * * *", jitter)
        slots = _boundaries(time.time(), minutes)
        say(f"  {count} schedules made ({rate:,.0f}/s); slots from {_hms(slots[0])}")
        gave_up_at = _wait_runs(
            bench, count * minutes, slots[0], slots[-1] + jitter, slots[-1] + jitter + LATE_WAIT
        )
        scheduler_usage(cell, scheduler)
    finally:
        bench.stop_all()
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, execute_at FROM timers WHERE schedule_id IS NOT NULL"
                " AND scheduled_for = ANY(:slots)"
            ),
            {"slots": [datetime.fromtimestamp(s, UTC) for s in slots]},
        ).all()
    store.engine.dispose()
    due = {str(r[0]): r[1].timestamp() for r in rows}
    arrivals: dict[str, list[float]] = {}
    for run in user_app.runs(bench.user_broker):
        arrivals.setdefault(str(run["id"]), []).append(float(run["at"]))
    summarize(cell, due, arrivals, gave_up_at)
    unmade = count * minutes - len(due)
    if unmade:
        cell.never += unmade
        cell.notes.append(f"{unmade} slots with no occurrence made")
    cell.timers = count * minutes
    cell.notes.append(
        f"{count} schedules `* * * * *`, jitter {jitter:.0f}s, {minutes} minute slots; "
        f"made through the Python API at {rate:,.0f}/s ({THREADS} threads)"
    )
    return cell


def _plain_beat(bench: Bench, count: int, minutes: int) -> Cell:
    from bench import user_app

    tag = "schedules-beat"
    cell = Cell("celery-beat", "schedules", variant="herd")
    redis.Redis.from_url(bench.user_broker).flushdb()
    beat_log = f"beat-{tag}"
    try:
        bench.start_user_worker(tag)
        proc = bench.spawn(
            [
                str(BIN / "celery"),
                "-A",
                "bench.beat_app",
                "beat",
                "-s",
                str(bench.workdir / f"beat-schedule-{uuid.uuid4().hex[:6]}"),
                "--loglevel=WARNING",
            ],
            {"BENCH_USER_BROKER_URL": bench.user_broker, "BENCH_BEAT_ENTRIES": str(count)},
            beat_log,
        )
        slots = _boundaries(time.time(), minutes)
        gave_up_at = _wait_runs(bench, count * minutes, slots[0], slots[-1], slots[-1] + LATE_WAIT)
        if proc.poll() is None:
            cpu = psutil.Process(proc.pid).cpu_times()
            cell.scheduler_cpu_s = cpu.user + cpu.system
    finally:
        bench.stop_all()
    due = {f"{n}@{s:.0f}": s for n in range(count) for s in slots}
    arrivals: dict[str, list[float]] = {}
    for run in user_app.runs(bench.user_broker):
        at = float(run["at"])
        minute = math.floor(at / 60) * 60
        arrivals.setdefault(f"{run['n']}@{minute:.0f}", []).append(at)
    summarize(cell, due, arrivals, gave_up_at)
    cell.notes.append(
        f"{count} beat_schedule entries crontab() (every minute), one plain `celery beat`, "
        f"{minutes} minute slots; beat cpu s in the sched cpu column"
    )
    return cell


def _hms(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")


def _stored(bench: Bench, stored: int, report: SchedulesReport) -> None:
    db_url = bench.database("bench_schedules_stored")
    env = _env(bench, db_url)
    rate_sample = min(stored, 5000)
    api_sample = min(stored - rate_sample, 1000)
    report.python_per_s = _create_many(env, range(rate_sample), DAILY, 0.0, stored=True)
    base = start_api(bench, db_url, "api-schedules")
    began = time.perf_counter()
    with requests.Session() as http:
        http.headers["X-API-Key"] = API_KEY
        for n in range(api_sample):
            body = {"cron": DAILY, "callback_type": "http", "callback_config": _stored_config(n)}
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
    herd = by.get("herd")
    if herd:
        ok = herd.p99_ms <= 1000 and herd.twice == 0 and herd.never == 0
        lines.append(
            f"target schedules/timers :00 herd p99 <= 1 s, 0 duplicates, 0 missed: "
            f"{'met' if ok else 'MISSED'} ({herd.p99_ms:.0f} ms, {herd.twice} duplicates, "
            f"{herd.never} missed)"
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
