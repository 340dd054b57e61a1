"""What handing a :00 herd over costs on this machine, part by part, with no scheduler:
`python -m bench.handover_floor [N]` (default 10,000).

- `publisher xP`: the worker's own publisher (timers.callbacks.task_publisher: Celery's message
  functions, kombu batches) given N tasks at once, by 1 process and by 2 processes of N/2 at the
  same time: the p99 of when each was taken (seen from its asyncio loop, as a delivery sees it)
  and the CPU each process used;
- `celery loop`: Celery's `create_task_message` and `send_task_message` for N tasks in kombu
  batches of 500, in a plain loop (no futures, no threads);
- `postgres`: N rows updated by id, 500 a statement, in the shapes of a claim, a start and an
  outcome, on a scratch table with the timers table's columns and indexes.

The tasks go to a queue on the user broker that no worker reads, emptied afterwards. Nothing of
the database runs beside the publishers, nor the user's worker: each part alone, the floor under
the whole path (bench/workloads/herd.py measures the path, and `floor:sent` the publisher with the
user's worker running).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import text

from bench.harness import Bench
from tests.support.services import find_services
from timers.store import database_engine

QUEUE = "bench-handover-floor"
TASK = "bench.noop"
BATCH = 500
DATABASE = "bench_handover_floor"
UPDATES = {
    "claim": "UPDATE floor SET status = 'executing', claimed_at = now(), attempts = attempts + 1"
    " WHERE id = ANY(CAST(:ids AS uuid[]))",
    "start": "UPDATE floor SET started_at = now(), leased_until = now() + interval '30 s'"
    " WHERE id = ANY(CAST(:ids AS uuid[])) RETURNING id, callback_config, execute_at",
    "outcome": "UPDATE floor SET status = 'completed', executed_at = now(), updated_at = now(),"
    ' history = history || CAST(\'[{"outcome": "completed"}]\' AS jsonb)'
    " WHERE id = ANY(CAST(:ids AS uuid[]))",
}


def _config(n: int) -> dict[str, Any]:
    return {"type": "celery", "task": TASK, "args": [n], "queue": QUEUE}


def publish(broker: str, count: int, start_at: float) -> tuple[float, float]:
    """Hand `count` tasks to the worker's publisher at the unix time `start_at`: (p99 seconds
    until taken, CPU seconds)."""
    from timers.callbacks.celery import CeleryCallback
    from timers.callbacks.task_publisher import Publisher

    calls = [CeleryCallback.from_config(_config(n)) for n in range(count)]
    publisher = Publisher(broker, 30.0)
    taken: list[float] = []

    async def one(call: CeleryCallback) -> None:
        assert await publisher.publish(call, uuid.uuid4()) is None
        taken.append(time.time() - start_at)

    async def every() -> None:
        await asyncio.gather(*(one(call) for call in calls))

    try:
        asyncio.run(publisher.publish(CeleryCallback.from_config(_config(-1)), uuid.uuid4()))
        if time.time() > start_at:
            raise RuntimeError("this publisher was not ready by the start time")
        time.sleep(start_at - time.time())
        cpu = time.process_time()
        asyncio.run(every())
        cpu = time.process_time() - cpu
    finally:
        publisher.close()
    taken.sort()
    return taken[int(len(taken) * 0.99) - 1], cpu


def publishers(broker: str, count: int, processes: int) -> list[tuple[float, float]]:
    start_at = time.time() + 8.0  # every process started, connected and warmed up by then
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        jobs = [
            pool.apply_async(publish, (broker, count // processes, start_at))
            for _ in range(processes)
        ]
        return [job.get(120) for job in jobs]


def celery_loop(broker: str, count: int) -> float:
    """CPU seconds of Celery's message functions for `count` tasks, batched as the publisher is."""
    from celery import Celery

    app = Celery("bench-floor", broker=broker, set_as_current=False)
    app.conf.task_serializer = "json"
    amqp = app.amqp
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection()
        cpu = time.process_time()
        for start in range(0, count, BATCH):
            with producer.batch(max_size=BATCH):
                for n in range(start, min(count, start + BATCH)):
                    task_id = str(uuid.uuid4())
                    message = amqp.create_task_message(
                        task_id, TASK, [n], {}, argsrepr=repr([n]), kwargsrepr="{}", origin="b"
                    )
                    options: dict[str, Any] = {"queue": QUEUE}
                    if n:
                        options["declare"] = []
                    amqp.send_task_message(producer, TASK, message, retry=False, **options)
        cpu = time.process_time() - cpu
    app.close()
    return cpu


def postgres(url: str, count: int) -> dict[str, float]:
    """Seconds PostgreSQL took for each shape of update over `count` rows, 500 a statement."""
    engine = database_engine(url)
    took: dict[str, float] = {}
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS floor"))
            conn.execute(text("CREATE TABLE floor (LIKE timers INCLUDING ALL)"))
            conn.execute(
                text(
                    "INSERT INTO floor (id, execute_at, callback_type, callback_config, status)"
                    " SELECT gen_random_uuid(), now(), 'celery', CAST(:config AS jsonb), 'pending'"
                    " FROM generate_series(1, :n)"
                ),
                {"config": '{"type": "celery", "task": "bench.noop", "args": [1]}', "n": count},
            )
        with engine.connect() as conn:
            ids = [str(r[0]) for r in conn.execute(text("SELECT id FROM floor"))]
        for name, statement in UPDATES.items():
            began = time.perf_counter()
            for start in range(0, count, BATCH):
                with engine.begin() as conn:
                    conn.execute(text(statement), {"ids": ids[start : start + BATCH]})
            took[name] = time.perf_counter() - began
    finally:
        engine.dispose()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, nargs="?", default=10_000)
    args = parser.parse_args()
    count = args.count
    workdir = Path(tempfile.mkdtemp(prefix="timers-handover-floor-"))
    bench = Bench(find_services(workdir, nats=False), workdir, 0)
    broker = bench.user_broker
    try:
        for processes in (1, 2):
            for p99, cpu in publishers(broker, count, processes):
                print(
                    f"publisher {processes}P: {count // processes:,} tasks, "
                    f"taken p99 {p99 * 1000:,.0f} ms, {cpu:.2f} s of CPU"
                )
            redis.Redis.from_url(broker).delete(QUEUE)
        print(f"celery loop: {count:,} tasks, {celery_loop(broker, count):.2f} s of CPU")
        redis.Redis.from_url(broker).delete(QUEUE)
        took = postgres(bench.database(DATABASE), count)
        print(
            f"postgres: {count:,} rows, "
            + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in took.items())
            + f" ({sum(took.values()):.2f} s in all)"
        )
    finally:
        redis.Redis.from_url(broker).delete(QUEUE)
        bench.stop_all()
        bench.services.admin_execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


if __name__ == "__main__":
    main()
