"""The worker's CPU per delivery, its own process alone: `python -m bench.worker_cpu [N]`.

N timers (default 8,000) due now are made and claimed in a fresh database, then started in this
process as a worker's pool process starts them (`start_deliveries`, 50 claims a message, as the
scheduler sends them), delivered by its `DeliveryEngine` and recorded by its `OutcomeRecorder`.
It prints the CPU seconds this process used from the first start to the last outcome written,
per delivery, for `http` callbacks (to bench.receiver on 127.0.0.1) and `celery` callbacks
(published to a queue no worker reads, emptied afterwards). Celery's own task handling, the
scheduler and PostgreSQL are not in the figure: `make bench` measures the whole system; this says
what one delivery costs the worker's code, so that a change to it can be compared in one run
(`--kinds`, `--rounds`; run it from two checkouts, alternating, to compare two versions).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from sqlalchemy import text

from bench.harness import Bench
from tests.support.services import find_services
from timers.config import settings_from_env
from timers.storage import NewTimer
from timers.store import TimerStore, database_engine
from timers.worker.tasks import WorkerResources, start_deliveries

PER_MESSAGE = 50
QUEUE = "bench-worker-cpu"


def one_round(bench: Bench, kind: str, count: int, url: str) -> tuple[float, float]:
    """CPU seconds and wall seconds of `count` deliveries of this kind."""
    database = bench.database("bench_worker_cpu")
    settings = settings_from_env(
        {
            "DATABASE_URL": database,
            "REDIS_URL": bench.broker,
            "TIMERS_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TIMERS_TASK_BROKER_URL": bench.user_broker,
            "TIMERS_CELERY_TASKS": "bench.*",
            "TIMERS_CELERY_QUEUES": QUEUE,
        }
    )
    store = TimerStore(database_engine(database))
    config = (
        {"type": "http", "url": url}
        if kind == "http"
        else {"type": "celery", "task": "bench.noop", "queue": QUEUE}
    )
    due = datetime.now(UTC) - timedelta(seconds=1)
    made = store.create_many([NewTimer(due, kind, config) for _ in range(count)])
    ids = [t.id for t in made]
    claims = []
    for start in range(0, count, 500):
        claims += [[str(c.id), c.claim] for c in store.claim_due(ids[start : start + 500])]
    resources = WorkerResources(settings)
    resources.deliveries  # noqa: B018 - made before the clock starts, as in a pool process
    cpu, wall = time.process_time(), time.monotonic()
    for start in range(0, len(claims), PER_MESSAGE):
        start_deliveries(resources, claims[start : start + PER_MESSAGE])
    finished = text("SELECT count(*) FROM timers WHERE status IN ('completed', 'failed')")
    with store.engine.connect() as conn:
        while conn.execute(finished).scalar_one() < count:
            time.sleep(0.01)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    with store.engine.connect() as conn:
        failed = conn.execute(text("SELECT count(*) FROM timers WHERE status = 'failed'"))
        assert failed.scalar_one() == 0, "some deliveries failed; see the timers table"
    resources.close()
    store.engine.dispose()
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, nargs="?", default=8000)
    parser.add_argument("--kinds", default="http,celery")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="timers-worker-cpu-"))
    bench = Bench(find_services(workdir, nats=False), workdir, 0)
    try:
        receiver = bench.receiver("worker-cpu")
        for kind in args.kinds.split(","):
            for n in range(args.rounds):
                cpu, wall = one_round(bench, kind, args.count, receiver.url)
                print(
                    f"{kind:7} round {n + 1}: {args.count:,} deliveries, "
                    f"{cpu / args.count * 1e6:.0f} us of CPU each ({cpu:.2f} s), "
                    f"{args.count / wall:,.0f}/s"
                )
    finally:
        redis.Redis.from_url(bench.user_broker).delete(QUEUE)
        bench.stop_all()
        bench.services.admin_execute('DROP DATABASE IF EXISTS "bench_worker_cpu" WITH (FORCE)')


if __name__ == "__main__":
    main()
