"""celery-tasks: 2,000 delayed calls of a user's own Celery task (bench/user_app.py), plain
`apply_async(countdown=30)` (celery-eta) or through `timers.celery.durable_eta` (timers)."""

from __future__ import annotations

import time
from typing import Any

import redis

from bench.cell import Cell, summarize
from bench.harness import Bench, scheduler_usage, xacts
from bench.workloads.catalogue import Workload
from timers.store import TimerStore, database_engine

COUNTDOWN = 30.0  # celery-tasks: each call's countdown
# celery-tasks: once every task has run, how long after the last due time to go on watching for
# second runs (two visibility timeouts; bounded by the workload's wait_after_due).
SETTLE = 20.0


def run_celery_tasks(bench: Bench, system: str, wl: Workload) -> Cell:
    """The celery-tasks workload: `wl.count` calls `task.apply_async((n,), countdown=30)` from this
    process through the user's own Celery app (bench/user_app.py), plain (celery-eta) or after
    `timers.celery.durable_eta(app, threshold=1)` (timers), timed; then wait for the user's worker
    to run them, at most `wl.wait_after_due` seconds after the last due time, and go on watching
    for second runs until SETTLE seconds after it. Runs are counted per task id; lateness is the
    run's time minus the call's start time plus the countdown."""
    import timers.celery
    from bench import user_app
    from timers.config import settings_from_env
    from timers.library import Timers

    tag = f"{system}-{wl.name}"
    cell = Cell(system, wl.name)
    redis.Redis.from_url(bench.user_broker).flushdb()
    redis.Redis.from_url(bench.broker).flushdb()
    due: dict[str, float] = {}
    runs: list[dict[str, Any]] = []
    scheduler = None
    store = None
    library = None
    db_name = f"bench_{system.replace('-', '_')}_{wl.name.replace('-', '_')}"
    app = user_app.create_app(bench.user_broker)
    gave_up_at = time.time()
    try:
        bench.start_user_worker(tag)
        if system != "celery-eta":
            url = bench.database(db_name)
            store = TimerStore(database_engine(url))
            env = {
                **bench.env(url),
                # `celery` callbacks may reach the user's app: its broker, its task, its queue.
                "TIMERS_TASK_BROKER_URL": bench.user_broker,
                "TIMERS_CELERY_TASKS": user_app.TASK,
                "TIMERS_CELERY_QUEUES": user_app.QUEUE,
            }
            bench.start_worker(system, env, tag)
            scheduler = bench.start_scheduler(env, tag, system)
            library = Timers(settings=settings_from_env(env))
            timers.celery.durable_eta(app, threshold=1, timers=library)
        task = app.tasks[user_app.TASK]
        started = time.perf_counter()
        for n in range(wl.count):
            called_at = time.time()
            result = task.apply_async((n,), countdown=COUNTDOWN)
            due[str(result.id)] = called_at + COUNTDOWN
        cell.calls_per_s = wl.count / (time.perf_counter() - started)
        before = xacts(store, db_name) if store is not None else 0
        measure_start = time.monotonic()
        last_due = max(due.values())
        wait_after_due = wl.wait_after_due or 60.0
        deadline = time.monotonic() + max(0.0, last_due - time.time()) + wait_after_due
        settle_until = time.monotonic() + max(0.0, last_due - time.time()) + SETTLE
        while time.monotonic() < deadline:
            runs = user_app.runs(bench.user_broker)
            if len({run["id"] for run in runs} & due.keys()) >= len(due):
                break
            time.sleep(0.5)
        gave_up_at = time.time()
        # Second runs come at about the same time as the first ones (each copy of a redelivered
        # eta message waits for the same eta), or later (a redelivery): keep watching a while.
        while time.monotonic() < min(deadline, settle_until):
            time.sleep(0.5)
        runs = user_app.runs(bench.user_broker)
        if len({run["id"] for run in runs} & due.keys()) < len(due):
            cell.notes.append(
                f"stopped waiting {wait_after_due:.0f}s after the last due time; "
                "tasks not run by then count as never"
            )
        if store is not None:
            elapsed_min = (time.monotonic() - measure_start) / 60
            cell.pg_statements_per_min = (xacts(store, db_name) - before) / elapsed_min
        if scheduler is not None:
            scheduler_usage(cell, scheduler)
    finally:
        bench.stop_all()
        app.close()
        if library is not None:
            library.close()
        if store is not None:
            store.engine.dispose()
    arrivals: dict[str, list[float]] = {}
    for run in runs:
        arrivals.setdefault(str(run["id"]), []).append(float(run["at"]))
    strangers = len(arrivals.keys() - due.keys())
    if strangers:
        cell.notes.append(f"{strangers} runs under task ids that no call returned")
    cell.notes.append(
        f"{wl.count} calls apply_async(countdown={COUNTDOWN:.0f}) "
        + ("through timers.celery.durable_eta" if system == "timers" else "plain")
        + f": {cell.calls_per_s:,.0f} calls/s; user app visibility_timeout "
        f"{user_app.VISIBILITY_TIMEOUT}s, restore sweep every 10 s"
    )
    return summarize(cell, due, arrivals, gave_up_at)
