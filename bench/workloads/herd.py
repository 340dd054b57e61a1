"""The schedules workload's herd (bench/workloads/schedules.py): `count` schedules firing every
minute, through timers and through plain `celery beat`, and the user's worker alone as the floor.

Each system gets two rows. `sent`: when the scheduler handed the task to the user's broker, minus
the slot (timers: the occurrence's delivery record, its start plus its duration, i.e. when the
broker took the message; beat: Celery's `after_task_publish` signal in bench/beat_app.py, the same
moment). `ran`: when the user's worker ran the task, minus the slot; that adds the user's worker
draining `count` tasks at once, which no scheduler controls. The `floor` rows show the hand-over
and that part alone: the same `count` tasks handed to the user's broker at one minute boundary by
the worker's own publisher, with no scheduler and no database (`floor:sent`), run by the same
worker (`floor:ran`).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psutil
import redis
from sqlalchemy import text

from bench.cell import Cell, summarize
from bench.harness import BIN, Bench, say, scheduler_usage
from timers.store import TimerStore, database_engine

THREADS = 8
LATE_WAIT = 60.0  # seconds after the last slot's due time before a slot counts as never
HERDS = ("herd", "jitter", "beat", "floor")


def run_herds(
    bench: Bench, count: int, minutes: int, which: tuple[str, ...], jitter: float
) -> list[Cell]:
    cells: list[Cell] = []
    for herd in which:
        say(f"schedules: {count} every minute, {herd} …")
        if herd == "herd":
            cells += _timers(bench, count, minutes, 0.0)
        elif herd == "jitter":
            cells += _timers(bench, count, minutes, jitter)
        elif herd == "beat":
            cells += _plain_beat(bench, count, minutes)
        elif herd == "floor":
            cells += _floor(bench, count)
    return cells


def task_env(bench: Bench, url: str) -> dict[str, str]:
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


def stored_config(n: int) -> dict[str, Any]:
    """The stored schedules' callback: they never fire in the run, and the API (started without
    a task broker) takes `http` callbacks."""
    return {"type": "http", "url": "http://127.0.0.1:9/stored", "payload": {"n": n}}


def create_many(
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
                        *(("http", stored_config(n)) if stored else ("celery", _config(n))),
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


def _runs_by_id(bench: Bench) -> dict[str, list[float]]:
    from bench import user_app

    arrivals: dict[str, list[float]] = {}
    for run in user_app.runs(bench.user_broker):
        arrivals.setdefault(str(run["id"]), []).append(float(run["at"]))
    return arrivals


def _timers(bench: Bench, count: int, minutes: int, jitter: float) -> list[Cell]:
    tag = f"schedules-{'jitter' if jitter else 'herd'}"
    variant = "jitter" if jitter else "herd"
    sent, ran = (Cell("timers", "schedules", variant=f"{variant}:{how}") for how in ("sent", "ran"))
    for url in (bench.broker, bench.user_broker):
        redis.Redis.from_url(url).flushdb()
    db_url = bench.database(f"bench_{tag.replace('-', '_')}")
    env = task_env(bench, db_url)
    store = TimerStore(database_engine(db_url))
    try:
        bench.start_user_worker(tag)
        bench.start_worker("timers", env, tag)
        scheduler = bench.start_scheduler(env, tag)
        rate = create_many(env, range(count), "* * * * *", jitter)
        slots = _boundaries(time.time(), minutes)
        say(f"  {count} schedules made ({rate:,.0f}/s); slots from {_hms(slots[0])}")
        gave_up_at = _wait_runs(
            bench, count * minutes, slots[0], slots[-1] + jitter, slots[-1] + jitter + LATE_WAIT
        )
        scheduler_usage(ran, scheduler)
    finally:
        bench.stop_all()
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, execute_at, history FROM timers WHERE schedule_id IS NOT NULL"
                " AND scheduled_for = ANY(:slots)"
            ),
            {"slots": [datetime.fromtimestamp(s, UTC) for s in slots]},
        ).all()
    store.engine.dispose()
    due = {str(r[0]): r[1].timestamp() for r in rows}
    # When the broker took each occurrence's task: the end of its (first) delivery attempt.
    handed = {
        str(r[0]): [
            datetime.fromisoformat(r[2][0]["started_at"]).timestamp()
            + r[2][0]["duration_ms"] / 1000
        ]
        for r in rows
        if r[2] and r[2][0].get("error") is None
    }
    summarize(sent, due, handed, gave_up_at)
    summarize(ran, due, _runs_by_id(bench), gave_up_at)
    for cell in (sent, ran):
        unmade = count * minutes - len(due)
        if unmade:
            cell.never += unmade
            cell.notes.append(f"{unmade} slots with no occurrence made")
        cell.timers = count * minutes
    ran.notes.append(
        f"{count} schedules `* * * * *`, jitter {jitter:.0f}s, {minutes} minute slots; "
        f"made through the Python API at {rate:,.0f}/s ({THREADS} threads)"
    )
    return [sent, ran]


def _plain_beat(bench: Bench, count: int, minutes: int) -> list[Cell]:
    from bench import beat_app, user_app

    tag = "schedules-beat"
    sent, ran = (Cell("celery-beat", "schedules", variant=f"herd:{how}") for how in ("sent", "ran"))
    redis.Redis.from_url(bench.user_broker).flushdb()
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
            f"beat-{tag}",
        )
        slots = _boundaries(time.time(), minutes)
        gave_up_at = _wait_runs(bench, count * minutes, slots[0], slots[-1], slots[-1] + LATE_WAIT)
        if proc.poll() is None:
            cpu = psutil.Process(proc.pid).cpu_times()
            ran.scheduler_cpu_s = cpu.user + cpu.system
    finally:
        bench.stop_all()
    # A slot is (entry, minute): a send or a run is counted against the minute it falls in.
    due = {f"{n}@{s:.0f}": s for n in range(count) for s in slots}
    handed: dict[str, list[float]] = {}
    slot_of_task: dict[str, str] = {}
    for record in beat_app.sent(bench.user_broker):
        at = float(record["at"])
        slot = f"{record['n']}@{math.floor(at / 60) * 60:.0f}"
        handed.setdefault(slot, []).append(at)
        slot_of_task[str(record["id"])] = slot
    arrivals: dict[str, list[float]] = {}
    for run in user_app.runs(bench.user_broker):
        slot = slot_of_task.get(
            str(run["id"]), f"{run['n']}@{math.floor(float(run['at']) / 60) * 60:.0f}"
        )
        arrivals.setdefault(slot, []).append(float(run["at"]))
    summarize(sent, due, handed, gave_up_at)
    summarize(ran, due, arrivals, gave_up_at)
    ran.notes.append(
        f"{count} beat_schedule entries crontab() (every minute), one plain `celery beat`, "
        f"{minutes} minute slots; beat cpu s in the sched cpu column"
    )
    return [sent, ran]


def _floor(bench: Bench, count: int) -> list[Cell]:
    """The hand-over with no scheduler and no database: `count` tasks handed to the user's broker
    at one minute boundary by the worker's own publisher (Celery's message functions, kombu
    batches, timers.callbacks.task_publisher), from one process; `floor:sent` is when the broker
    took each, `floor:ran` when the same user worker ran it."""
    from timers.callbacks.celery import CeleryCallback
    from timers.callbacks.task_publisher import Publisher

    sent = Cell("publisher", "schedules", variant="floor:sent")
    ran = Cell("user-worker", "schedules", variant="floor:ran")
    redis.Redis.from_url(bench.user_broker).flushdb()
    calls = [CeleryCallback.from_config(_config(n)) for n in range(count)]
    ids = [uuid.uuid4() for _ in range(count)]
    publisher = Publisher(bench.user_broker, 30.0)
    handed: dict[str, list[float]] = {}

    async def hand_over(call: CeleryCallback, task_id: uuid.UUID) -> None:
        if await publisher.publish(call, task_id) is None:
            handed[str(task_id)] = [time.time()]

    async def hand_over_all() -> None:
        await asyncio.gather(*(hand_over(c, i) for c, i in zip(calls, ids, strict=True)))

    try:
        bench.start_user_worker("schedules-floor")
        warm = CeleryCallback.from_config(_config(-1))  # connected, Celery's lazy imports done
        asyncio.run(publisher.publish(warm, uuid.uuid4()))
        (slot,) = _boundaries(time.time(), 1)
        time.sleep(max(0.0, slot - time.time()))
        asyncio.run(hand_over_all())
        gave_up_at = _wait_runs(bench, count, slot, slot, slot + LATE_WAIT)
    finally:
        bench.stop_all()
        publisher.close()
    due = {str(i): slot for i in ids}
    summarize(sent, due, handed, gave_up_at)
    summarize(ran, due, _runs_by_id(bench), gave_up_at)
    sent.notes.append(
        f"{count} tasks handed to the user's broker at one slot by the worker's own publisher, "
        "in one process, with no scheduler and no database: the hand-over alone"
    )
    ran.notes.append("run by the same user worker: what the user's worker alone adds")
    return [sent, ran]


def _hms(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")
