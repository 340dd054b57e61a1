"""The timed workloads: timers due at planned times (burst, isolation, steady, short, scale, flaky,
signing; bench.workloads.catalogue), created ahead or live, through one system, to one receiver;
counted once/twice/never with their lateness."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import text

from bench.cell import Cell, summarize
from bench.harness import (
    Bench,
    Receiver,
    drop_database,
    foreign_workers,
    read_count,
    scheduler_log,
    scheduler_usage,
    tree_cpu,
    worker_environment,
    xacts,
)
from bench.workloads.catalogue import Workload
from bench.workloads.flaky import Settled, settle, summarize_retries
from bench.workloads.scale import loader_query_plan, scale_database
from timers.models import uuid7
from timers.schema import timers as timers_table
from timers.store import NewTimer, TimerStore, database_engine


def interleave(
    t0: datetime, wl: Workload, hanging_urls: list[str], healthy_url: str
) -> list[tuple[uuid.UUID, datetime, str]]:
    """(id, due, url) for the workload's timers, spread evenly over `wl.spread` seconds from `t0`;
    the hanging ones (if any) evenly among the healthy ones, one per hanging receiver."""
    total = wl.count + wl.hanging
    every = total // wl.hanging if wl.hanging else 0
    plan = []
    hanging_left = list(hanging_urls)
    for i in range(total):
        at = t0 + timedelta(seconds=wl.spread * i / total)
        healthy = not (every and i % every == every - 1 and hanging_left)
        plan.append((uuid7(), at, healthy_url if healthy else hanging_left.pop(0)))
    assert not hanging_left and len(plan) == total
    return plan


def callback_config(url: str) -> dict[str, Any]:
    return {"type": "http", "url": url, "payload": {"bench": True}}


def insert_timers(
    store: TimerStore,
    plan: list[tuple[uuid.UUID, datetime, str]],
    retry: Mapping[str, Any] | None = None,
) -> None:
    rows = [
        {
            "id": tid,
            "execute_at": at,
            "callback_type": "http",
            "status": "pending",
            "callback_config": callback_config(url),
            # Only when given: a Python None would be stored as JSON null, not SQL NULL.
            **({"retry": dict(retry)} if retry is not None else {}),
        }
        for tid, at, url in plan
    ]
    with store.engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(timers_table.insert(), rows[i : i + 5000])


@dataclass
class Run:
    """One cell's moving parts: the system and workload, its receiver, database and processes,
    and the timers it measures (id -> unix time due)."""

    bench: Bench
    system: str
    wl: Workload
    tag: str
    cell: Cell
    receiver: Receiver
    store: TimerStore
    db_name: str
    env: dict[str, str]
    wait_after_due: float
    due: dict[str, float] = field(default_factory=dict)
    hang_count: Path | None = None
    hanging_urls: list[str] = field(default_factory=list)
    eta_app: Any = None
    worker: subprocess.Popen[bytes] | None = None
    scheduler: subprocess.Popen[bytes] | None = None
    gave_up_at: float = field(default_factory=time.time)
    settled: dict[str, Settled] = field(default_factory=dict)


def run_cell(
    bench: Bench,
    system: str,
    wl: Workload,
    variant: str = "",
    worker_env: Mapping[str, str | None] | None = None,
) -> Cell:
    """`wl` through `system`: its timers made ahead (or live), the system run until they have
    arrived (or `wait_after_due` after the last due time), then counted."""
    tag = f"{system}-{wl.name}" + (f"-{variant}" if variant else "")
    receiver = bench.receiver(tag, wl.path)
    redis.Redis.from_url(bench.broker).flushdb()
    db_name = f"bench_{system.replace('-', '_')}_{wl.name}" + (f"_{variant}" if variant else "")
    if wl.background_rows:
        url, filled = scale_database(bench, db_name, wl.background_rows, wl.keep_background)
    else:
        url = bench.database(db_name)
    run = Run(
        bench,
        system,
        wl,
        tag,
        Cell(system, wl.name, variant=variant or None),
        receiver,
        TimerStore(database_engine(url)),
        db_name,
        bench.env(url),
        wl.wait_after_due or (45.0 if system == "seed" else 20.0),
    )
    if wl.background_rows:
        run.cell.background_rows = wl.background_rows
        run.cell.notes.append(filled)
    try:
        worker = start(run, worker_env)
        if not wl.live:
            make_ahead(run)
        if system != "celery-eta":
            run.scheduler = bench.start_scheduler(run.env, tag, system)
        before = xacts(run.store, db_name)
        measure_start = time.monotonic()
        worker_cpu_before = tree_cpu(worker)
        if wl.live:
            make_live(run)
        wait_for_arrivals(run)
        run.cell.worker_cpu_s = tree_cpu(worker) - worker_cpu_before
        measured(run, before, measure_start)
    finally:
        arrivals = receiver.collect()
        bench.stop_all()
        run.store.engine.dispose()
        if run.eta_app is not None:
            run.eta_app.close()
        if wl.background_rows:  # gigabytes: not left behind (a kept template stays)
            drop_database(bench, db_name)
    return conclude(run, arrivals)


def start(run: Run, worker_env: Mapping[str, str | None] | None) -> subprocess.Popen[bytes]:
    """The hanging receivers the workload asks for, then the worker (and celery-eta's app, to
    send with)."""
    bench, wl, cell = run.bench, run.wl, run.cell
    if wl.hanging:
        # Lives through the lead, the due window and the wait, then exits by itself.
        lifetime = 60 + wl.spread + run.wait_after_due + 60
        run.hanging_urls, run.hang_count = bench.hanging_receivers(run.tag, wl.hanging, lifetime)
    worker = bench.start_worker(run.system, {**run.env, **(worker_env or {})}, run.tag)
    if worker_env:
        cell.notes.append(worker_environment(worker, worker_env))
    if run.system == "celery-eta":
        from bench.eta_app import create_app

        run.eta_app = create_app(bench.broker)
    return worker


def make_ahead(run: Run) -> None:
    """Every timer made before the scheduler starts: eta messages, or rows."""
    wl, store, cell, receiver = run.wl, run.store, run.cell, run.receiver
    lead = 4.0 + (wl.count + wl.hanging) / 1500
    t0 = datetime.now(UTC) + timedelta(seconds=lead)
    plan = interleave(t0, wl, run.hanging_urls, receiver.url)
    if run.eta_app is not None:
        eta_app = run.eta_app
        with eta_app.producer_or_acquire() as producer:
            for tid, at, target in plan:
                eta_app.send_task(
                    "bench.post",
                    args=[str(tid), callback_config(target)],
                    eta=at,
                    producer=producer,
                )
    else:
        insert_timers(store, plan, wl.retry)
        # Fresh statistics now, not an autovacuum pass in the middle of the measurement.
        with store.engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE timers"))
        if wl.background_rows:
            ms, rows, uses_index = loader_query_plan(store)
            cell.loader_ms = ms
            cell.notes.append(
                f"load statement (recovery and schedule sweep included) with "
                f"{wl.background_rows + wl.count:,} pending rows: {ms:.1f} ms for {rows:,} rows, "
                f"partial index {'used' if uses_index else 'NOT used'}"
            )
    # Only the timers to the healthy receiver are measured.
    run.due = {str(tid): at.timestamp() for tid, at, target in plan if target == receiver.url}


def make_live(run: Run) -> None:
    """Each timer created live_lead seconds before it is due, while everything runs."""
    wl = run.wl
    config = callback_config(run.receiver.url)
    start = time.monotonic()
    for i in range(wl.count):
        wait = start + wl.spread * i / wl.count - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        at = datetime.now(UTC) + timedelta(seconds=wl.live_lead)
        if run.eta_app is not None:
            tid = uuid7()
            run.eta_app.send_task("bench.post", args=[str(tid), config], eta=at)
        else:
            tid = run.store.create(
                NewTimer(execute_at=at, callback_type="http", callback_config=config)
            ).id
        run.due[str(tid)] = at.timestamp()


def expected_arrivals(run: Run) -> int:
    return len(run.due) * run.wl.arrivals_per_timer


def wait_for_arrivals(run: Run) -> None:
    """Until every request has arrived, or `wait_after_due` after the last due time."""
    last_due = max(run.due.values())
    deadline = time.monotonic() + max(0.0, last_due - time.time()) + run.wait_after_due
    while time.monotonic() < deadline and run.receiver.count() < expected_arrivals(run):
        time.sleep(0.25)
    run.gave_up_at = time.time()


def measured(run: Run, before: int, measure_start: float) -> None:
    """What is read while the system still runs: statements, the scheduler's usage, the settled
    rows of a workload with retries."""
    wl, cell = run.wl, run.cell
    if wl.hanging:
        cell.notes.append(
            f"healthy timers only; {wl.hanging} timers to {wl.hanging} never-answering "
            "receivers interleaved ({hung} connections to them accepted)"
        )
    if run.receiver.count() < expected_arrivals(run):
        cell.notes.append(
            f"stopped waiting {run.wait_after_due:.0f}s after the last due time; "
            "timers not arrived by then count as never"
        )
    elapsed_min = (time.monotonic() - measure_start) / 60
    if run.system != "celery-eta":
        cell.pg_statements_per_min = (xacts(run.store, run.db_name) - before) / elapsed_min
    if run.scheduler is not None:
        scheduler_usage(cell, run.scheduler)
    time.sleep(1.0)
    if wl.retry is not None:
        run.settled = settle(run.store, run.due.keys(), 15.0)
    # Read after the pause: the hanging receivers refresh their count every 0.5 s.
    hung = str(read_count(run.hang_count))
    cell.notes = [note.replace("{hung}", hung) for note in cell.notes]


def conclude(run: Run, arrivals: dict[str, list[float]]) -> Cell:
    """The cell's counts and lateness, with notes on what may have disturbed it."""
    bench, tag, cell, wl = run.bench, run.tag, run.cell, run.wl
    strangers = foreign_workers(bench, tag)
    if strangers:
        cell.notes.append(
            f"ANOTHER Celery worker used this broker during the cell ({', '.join(strangers)}): "
            "one on the same queue takes tasks of this cell (see never and recovered), and a "
            "test suite running alongside takes CPU: do not trust this row"
        )
    recovered = scheduler_log(bench, tag, "Recovered timer")
    if recovered:
        cell.notes.append(
            f"the scheduler recovered {len(recovered):,} timers and fired them again (e.g. "
            f"{recovered[0][1]}): tasks lost between scheduler and worker"
        )
    stats = run.receiver.stats()
    if wl.count_signed:
        cell.signed_requests = stats.get("signed", 0)
        cell.notes.append(
            f"{cell.signed_requests:,} of {stats.get('requests', 0):,} requests carried "
            "webhook-signature"
        )
    if wl.retry is not None:
        cell.notes.append(f"receiver answered {stats.get('rejected', 0):,} first requests 503")
        spawned: dict[str, list[float]] = {}
        for when, line in scheduler_log(bench, tag, "Spawned callback for timer "):
            spawned.setdefault(line.rsplit(" ", 1)[-1], []).append(when)
        return summarize_retries(cell, run.due, arrivals, run.settled, run.gave_up_at, spawned)
    return summarize(cell, run.due, arrivals, run.gave_up_at)
