"""retention (only when named: `--only retention`; it fills millions of rows first): live load
(`--retention-rate`, 500 timers/s, coming due; each batch of a tenth of a second created by one
INSERT … SELECT, LEAD seconds before it is due; the shipped scheduler and worker; arrivals at the bench's receiver) on a database that also holds `--retention-rows`
(5,000,000) completed timers that finished 8 to 15 days ago, and one pending timer due in 1 to 30
days per 100 of them (a live table has some: statistics that show none make the scheduler's
claims plan for none). Two runs, each on a fresh copy of the same filled database (`CREATE
DATABASE … TEMPLATE`): first purge, TIMERS_RETENTION unset (7 days), so the scheduler deletes
those rows while the load runs (its first pass starts 10 s after it starts), the load running
until the scheduler logs `retention: deleted` (at least `--retention-min-seconds`, at most
`--retention-max-seconds`); then baseline, TIMERS_RETENTION=0 (off), the load for the same time.
Lateness is arrival minus `execute_at`, over every timer created. Reported: both rows, the ratio
of their p99s (target purge/baseline <= 1.20), the rows deleted, how long the purge took, its
progress, the lateness of the timers due while it ran, and the most timers seen executing at once
(the worker's backlog, counted up to 50,000).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import text

from bench.cell import Cell, summarize
from bench.cell import nearest_rank as percentile
from bench.harness import (
    Bench,
    LogTail,
    copy_database,
    drop_database,
    log_time,
    say,
    scheduler_usage,
    tree_cpu,
    xacts,
)
from bench.workloads.filling import Mix, filled_database
from bench.workloads.timed import callback_config
from timers.scheduler.retention import FIRST_PASS_AFTER
from timers.store import TimerStore, database_engine

RETENTION_TEMPLATE = "bench_ops_retention_template"
TARGET_RATIO = 1.20
RATE = 500  # timers coming due per second in the retention workload
PENDING_SHARE = 100  # retention: one pending timer (due in 1 to 30 days) per 100 finished ones
LEAD = 5.0  # seconds between a timer's creation and its execute_at


@dataclass
class Purge:
    """What the scheduler's retention did during a run (from its log and PostgreSQL's counters)."""

    deleted: int | None = None  # from its `retention: deleted` line
    started_at: float | None = None  # unix time: the scheduler's start + FIRST_PASS_AFTER
    finished_at: float | None = None  # unix time of that line
    old_rows_left: int | None = None  # finished rows older than 7 days after the run
    progress: list[tuple[float, int]] = field(default_factory=list)  # (s into the run, deleted)

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass
class RetentionReport:
    rows: int
    pending: int  # pending timers due over the next 30 days, beside the `rows` finished ones
    rate: int  # timers coming due per second
    fill_s: float = 0.0
    fill_parts: dict[str, float] = field(default_factory=dict)
    copy_s: list[float] = field(default_factory=list)  # CREATE DATABASE … TEMPLATE, each run
    seconds: float = 0.0  # how long each run's load ran
    cells: list[Cell] = field(default_factory=list)  # purge, baseline
    purge: Purge = field(default_factory=Purge)
    baseline_old_rows_left: int | None = None
    during_purge: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0

    def ratio(self) -> float | None:
        cells = {c.variant: c for c in self.cells}
        on, off = cells.get("purge"), cells.get("baseline")
        if on is None or off is None or off.p99_ms <= 0:
            return None
        return on.p99_ms / off.p99_ms


# One batch of the live load: timers lo..hi of the run, timer n due at t0 + n / rate, with
# UUIDv7 ids of the statement's time (as the API makes them: the primary key grows at its end).
LIVE = text(
    """
    INSERT INTO timers (id, execute_at, callback_type, callback_config, status)
    SELECT (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || '7'
            || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
           to_timestamp(CAST(:t0 AS float8) + n / CAST(:rate AS float8)),
           'http', CAST(:config AS jsonb), 'pending'
    FROM (
        SELECT n, md5(random()::text) AS h
        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g(n)
        OFFSET 0
    ) s
    """
)
OLD_ROWS = text(
    "SELECT count(*) FROM timers "
    "WHERE status = 'completed' AND updated_at < now() - interval '7 days'"
)
DELETED = text("SELECT n_tup_del FROM pg_stat_user_tables WHERE relname = 'timers'")
# Claimed and not finished yet: the worker's backlog (on the partial index of executing timers),
# counted up to EXECUTING_CAP (a count of a pile of hundreds of thousands would load the database).
EXECUTING_CAP = 50_000
EXECUTING = text(
    "SELECT count(*) FROM (SELECT 1 FROM timers WHERE status = 'executing' LIMIT :cap) AS t"
)
PURGED = re.compile(r"retention: deleted (\d+) finished timers")


def steady_live(
    bench: Bench,
    url: str,
    variant: str,
    retention: str | None,
    *,
    seconds: float | None,
    min_seconds: float,
    max_seconds: float,
    rate: int = RATE,
) -> tuple[Cell, Purge, float, dict[str, float]]:
    """`rate` timers/s coming due, each created LEAD s before (a batch every 0.1 s), with the
    shipped worker and scheduler (TIMERS_RETENTION `retention`; None: unset, the default). Runs
    `seconds`, or (None) until the scheduler logs its first retention pass, at least
    `min_seconds` and at most `max_seconds`. Returns the cell, what retention did, and how long
    the load ran, and the lateness of the timers due while the purge ran."""
    tag = f"timers-retention-{variant}"
    db_name = url.rsplit("/", 1)[1].split("?")[0]
    cell = Cell("timers", "retention", variant=variant)
    receiver = bench.receiver(tag)
    redis.Redis.from_url(bench.broker).flushdb()
    store = TimerStore(database_engine(url))
    env: dict[str, str | None] = {**bench.env(url), "TIMERS_RETENTION": retention}
    due: dict[str, float] = {}
    purge = Purge()
    config = callback_config(receiver.url)
    ran = 0.0
    gave_up_at = time.time()
    try:
        worker = bench.start_worker("timers", env, tag)
        scheduler = bench.start_scheduler(env, tag)
        tail = LogTail(bench.workdir / f"scheduler-{tag}.log")
        for line in tail.lines():
            if "scheduler started" in line and (at := log_time(line)) is not None:
                purge.started_at = at + FIRST_PASS_AFTER
        with store.engine.connect() as conn:
            deleted_before = int(conn.execute(DELETED).scalar() or 0)
        before = xacts(store, db_name)
        worker_cpu = tree_cpu(worker)
        start = time.monotonic()
        start_wall = time.time()
        created = 0
        lag = 0.0  # how far behind its plan the creation of a batch started, at most
        backlog = executing = 0  # timers executing (claimed, not finished): most seen, last seen
        next_poll = start
        while True:
            now = time.monotonic()
            ran = now - start
            if seconds is not None:
                if ran >= seconds:
                    break
            elif (purge.finished_at is not None and ran >= min_seconds) or ran >= max_seconds:
                break
            wanted = int(rate * ran)
            if wanted > created:
                lag = max(lag, time.time() - (start_wall + created / rate))
                with store.engine.connect() as conn:
                    conn.execute(
                        LIVE,
                        {
                            "lo": created,
                            "hi": wanted - 1,
                            "t0": start_wall + LEAD,
                            "rate": rate,
                            "config": json.dumps(config),
                        },
                    )
                created = wanted
            if now >= next_poll:
                next_poll = now + 2.0
                with store.engine.connect() as conn:
                    deleted = int(conn.execute(DELETED).scalar() or 0) - deleted_before
                    executing = int(
                        conn.execute(EXECUTING, {"cap": EXECUTING_CAP + 1}).scalar_one()
                    )
                backlog = max(backlog, executing)
                if not purge.progress or purge.progress[-1][1] != deleted:
                    purge.progress.append((round(ran, 1), deleted))
                for line in tail.lines():
                    found = PURGED.search(line)
                    if found and purge.finished_at is None:
                        purge.deleted = int(found.group(1))
                        purge.finished_at = log_time(line)
            time.sleep(max(0.0, start + (created + rate / 10) / rate - time.monotonic()))
        with store.engine.connect() as conn:
            due = {
                str(r.id): float(r.at)
                for r in conn.execute(
                    text(
                        "SELECT id, extract(epoch FROM execute_at) AS at FROM timers "
                        "WHERE created_at >= to_timestamp(:since) - interval '1 second' "
                        "AND callback_config ->> 'url' = :url"
                    ),
                    {"since": start_wall, "url": receiver.url},
                )
            }
        last_due = max(due.values())
        deadline = time.monotonic() + max(0.0, last_due - time.time()) + 20.0
        while time.monotonic() < deadline and receiver.count() < len(due):
            time.sleep(0.25)
        gave_up_at = time.time()
        cell.worker_cpu_s = tree_cpu(worker) - worker_cpu
        cell.pg_statements_per_min = (xacts(store, db_name) - before) / (
            (time.monotonic() - start) / 60
        )
        scheduler_usage(cell, scheduler)
        if receiver.count() < len(due):
            cell.notes.append("stopped waiting 20s after the last due time; not arrived: never")
    finally:
        arrivals = receiver.collect()
        bench.stop_all()
    for line in LogTail(bench.workdir / f"scheduler-{tag}.log").lines():
        found = PURGED.search(line)
        if found and purge.finished_at is None:
            purge.deleted = int(found.group(1))
            purge.finished_at = log_time(line)
    try:
        with store.engine.connect() as conn:
            purge.old_rows_left = int(conn.execute(OLD_ROWS).scalar_one())
    finally:
        store.engine.dispose()
    summarize(cell, due, arrivals, gave_up_at)
    cell.notes.append(
        f"{rate} timers/s created live {LEAD:.0f}s before due for {ran:.0f}s (a batch started at "
        f"most {lag * 1000:.0f} ms behind its plan); "
        f"TIMERS_RETENTION {'unset (7d)' if retention is None else retention}"
    )

    def counted(n: int) -> str:
        return f"over {EXECUTING_CAP:,}" if n > EXECUTING_CAP else f"{n:,}"

    cell.notes.append(
        f"timers executing (claimed, not finished; polled every 2 s): at most {counted(backlog)}, "
        f"{counted(executing)} when the load stopped"
    )
    cell.notes.append("p99 ms by due time, per 30 s from the first: " + windows(due, arrivals))
    return cell, purge, ran, during(due, arrivals, gave_up_at, purge)


def windows(due: dict[str, float], arrivals: dict[str, list[float]], width: float = 30.0) -> str:
    """The p99 lateness of the timers due in each `width` seconds of the run (not arrived: inf)."""
    if not due:
        return "-"
    first = min(due.values())
    late: dict[int, list[float]] = {}
    for timer_id, at in due.items():
        got = arrivals.get(timer_id)
        late.setdefault(int((at - first) // width), []).append(
            (min(got) - at) * 1000 if got else math.inf
        )
    return " ".join(f"{percentile(late[k], 0.99):.0f}" for k in sorted(late))


def during(
    due: dict[str, float], arrivals: dict[str, list[float]], gave_up_at: float, purge: Purge
) -> dict[str, float]:
    """Lateness of the timers due while the purge ran (empty when it did not run or finish)."""
    if purge.started_at is None or purge.finished_at is None:
        return {}
    inside = {k: v for k, v in due.items() if purge.started_at <= v <= purge.finished_at}
    if not inside:
        return {}
    cell = summarize(Cell("timers", "retention"), inside, arrivals, gave_up_at)
    return {
        "timers": cell.timers,
        "p50_ms": cell.p50_ms,
        "p99_ms": cell.p99_ms,
        "max_ms": cell.max_ms,
    }


def run_retention(
    bench: Bench, rows: int, min_seconds: float, max_seconds: float, rate: int = RATE
) -> RetentionReport:
    began = time.monotonic()
    report = RetentionReport(rows=rows, pending=rows // PENDING_SHARE, rate=rate)
    now = datetime.now(UTC)
    on_db, off_db = "bench_ops_retention_purge", "bench_ops_retention_baseline"
    try:
        t = time.monotonic()
        start, end = now - timedelta(days=15), now - timedelta(days=8, hours=2)
        fills = [
            # Completed, each due within two hours of its creation: finished 8 to 15 days ago.
            (rows, start, end, Mix()),
            # And pending ones, due 1 to 30 days from now, as a live table has: without them the
            # statistics say no timer is pending, and the scheduler's claims plan for that.
            (report.pending, start, end, Mix(far=0.0)),
        ]
        _, report.fill_parts = filled_database(bench, RETENTION_TEMPLATE, fills)
        report.fill_s = time.monotonic() - t
        url, took = copy_database(bench, RETENTION_TEMPLATE, on_db)
        report.copy_s.append(took)
        say("retention: steady load while the scheduler purges …")
        cell, report.purge, report.seconds, report.during_purge = steady_live(
            bench,
            url,
            "purge",
            None,
            seconds=None,
            min_seconds=min_seconds,
            max_seconds=max_seconds,
            rate=rate,
        )
        report.cells.append(cell)
        drop_database(bench, on_db)
        url, took = copy_database(bench, RETENTION_TEMPLATE, off_db)
        report.copy_s.append(took)
        say(f"retention: the same load for {report.seconds:.0f}s with retention off …")
        cell, _, _, _ = steady_live(
            bench,
            url,
            "baseline",
            "0",
            seconds=report.seconds,
            min_seconds=0,
            max_seconds=report.seconds,
            rate=rate,
        )
        report.cells.append(cell)
        engine = database_engine(url)
        try:
            with engine.connect() as conn:
                report.baseline_old_rows_left = int(conn.execute(OLD_ROWS).scalar_one())
        finally:
            engine.dispose()
    finally:
        bench.stop_all()
        for name in (on_db, off_db, RETENTION_TEMPLATE):
            drop_database(bench, name)
    report.total_s = time.monotonic() - began
    return report


def retention_lines(report: RetentionReport) -> str:
    parts = ", ".join(f"{k.removesuffix('_s')} {v:.0f}s" for k, v in report.fill_parts.items())
    copies = " and ".join(f"{s:.0f}s" for s in report.copy_s)
    lines = [
        f"retention: {report.rows:,} completed timers that finished 8 to 15 days ago (and "
        f"{report.pending:,} pending ones due in 1 to 30 days), filled in {report.fill_s:.0f}s "
        f"({parts}); each run on a copy of them (CREATE DATABASE … TEMPLATE: {copies}); "
        f"{report.rate} timers/s for {report.seconds:.0f}s in each run"
    ]
    purge = report.purge
    if purge.seconds is not None and purge.deleted is not None:
        lines.append(
            f"retention purge: the scheduler deleted {purge.deleted:,} rows in "
            f"{purge.seconds:.0f}s ({purge.deleted / purge.seconds:,.0f} rows/s; from its first "
            f"pass, {FIRST_PASS_AFTER:.0f}s after it started, to its `retention: deleted` line); "
            f"old rows left after the run: {purge.old_rows_left:,}"
        )
    else:
        lines.append(
            f"retention purge: NOT finished within the run ({report.seconds:.0f}s); "
            f"old rows left: {purge.old_rows_left}"
        )
    if purge.progress:
        step = max(1, len(purge.progress) // 8)
        shown = purge.progress[::step]
        if shown[-1] != purge.progress[-1]:
            shown.append(purge.progress[-1])
        lines.append(
            "retention deleted so far (s into the run: rows, from pg_stat_user_tables): "
            + ", ".join(f"{s:.0f}: {n:,}" for s, n in shown)
        )
    if report.baseline_old_rows_left is not None:
        lines.append(f"retention baseline: {report.baseline_old_rows_left:,} old rows still there")
    if report.during_purge:
        d = report.during_purge
        lines.append(
            f"retention purge, timers due while it ran ({d['timers']:,.0f}): p50/p99/max "
            f"{d['p50_ms']:.0f}/{d['p99_ms']:.0f}/{d['max_ms']:.0f} ms"
        )
    ratio = report.ratio()
    cells = {c.variant: c for c in report.cells}
    if ratio is not None:
        on, off = cells["purge"], cells["baseline"]
        bound = "p99" in on.lower_bounds or "p99" in off.lower_bounds
        lines.append(
            f"retention p99 lateness purge/baseline: {ratio:.2f}x ({on.p99_ms:.0f} vs "
            f"{off.p99_ms:.0f} ms{', bounds' if bound else ''})"
        )
        met = ratio <= TARGET_RATIO and not bound and on.never == 0
        lines.append(
            f"target retention p99 with the purge within {TARGET_RATIO - 1:.0%} of the same "
            f"run without it: {'met' if met else 'MISSED'} ({ratio:.2f}x)"
        )
    lines.append(f"(retention workload {report.total_s:.0f}s)")
    return "\n".join(lines)
