"""The user's own Celery application in the celery-tasks workload: its own module, broker and queue,
and one task that records each of its runs (task id, unix time) in a Redis list on its broker, so
that the benchmark can count runs per task id and measure lateness.

A plain Celery app with Celery's defaults, except for Redis's visibility timeout, set to 10 s (the
same for both systems): an unacknowledged message goes back to the queue after that long, which
is what makes a plain `apply_async(countdown=30)` run twice (kombu#337). Kombu 5.7 sweeps for
such messages only on every 10th 10-second tick of a worker (`unacked_restore_throttle`), so a
worker would restore them some 100 s apart and a 30 s eta would run twice or not depending on
where the sweep falls; `unacked_restore_throttle=1` makes the sweep run every 10 s, so the
visibility timeout holds as configured.

    BENCH_USER_BROKER_URL=redis://127.0.0.1:6379/15 celery -A bench.user_app worker
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import redis
from celery import Celery, Task

QUEUE = "bench-user"
TASK = "bench.user.record"
RUNS = "bench:user:runs"
VISIBILITY_TIMEOUT = 10


def create_app(broker_url: str) -> Celery:
    app = Celery("bench-user", broker=broker_url, set_as_current=False)
    app.conf.task_default_queue = QUEUE
    app.conf.task_serializer = "json"
    app.conf.accept_content = ["json"]
    app.conf.task_ignore_result = True
    app.conf.broker_transport_options = {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "unacked_restore_throttle": 1,  # see the module's docstring
    }
    app.conf.broker_connection_retry_on_startup = True
    store = functools.cache(lambda: redis.Redis.from_url(broker_url))

    @app.task(name=TASK, bind=True, shared=False)
    def record(self: Task, n: int) -> None:
        store().rpush(RUNS, json.dumps({"id": self.request.id, "n": n, "at": time.time()}))

    return app


def runs(broker_url: str, key: str = RUNS) -> list[dict[str, Any]]:
    """Every run recorded so far (or what else is recorded under `key`), oldest first."""
    client = redis.Redis.from_url(broker_url)
    try:
        return [json.loads(raw) for raw in client.lrange(key, 0, -1)]
    finally:
        client.close()


@functools.cache
def _app_from_env() -> Celery:
    return create_app(os.environ["BENCH_USER_BROKER_URL"])


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app_from_env()
    raise AttributeError(name)
