"""Plain `celery beat` in the schedules workload: the user's app (bench/user_app.py) with
`BENCH_BEAT_ENTRIES` entries in its `beat_schedule`, entry `s<n>` a crontab every minute calling
the user's task with `n`, as the timers side's schedule `n` does. Each message beat sends is
recorded (task id, `n`, unix time) in a Redis list on the user's broker, from Celery's
`after_task_publish` signal: when the broker took it.

    BENCH_USER_BROKER_URL=redis://127.0.0.1:6379/0 BENCH_BEAT_ENTRIES=10000 \
        celery -A bench.beat_app beat -s /tmp/beat-schedule
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import redis
from celery import Celery
from celery.schedules import crontab
from celery.signals import after_task_publish

from bench.user_app import TASK, create_app, runs

SENT = "bench:beat:sent"


def beat_schedule(count: int) -> dict[str, dict[str, Any]]:
    return {f"s{n}": {"task": TASK, "schedule": crontab(), "args": [n]} for n in range(count)}


@functools.cache
def _app_from_env() -> Celery:
    app = create_app(os.environ["BENCH_USER_BROKER_URL"])
    app.conf.beat_schedule = beat_schedule(int(os.environ.get("BENCH_BEAT_ENTRIES", "10000")))
    store = redis.Redis.from_url(os.environ["BENCH_USER_BROKER_URL"])

    @after_task_publish.connect(weak=False)
    def record_sent(headers: dict[str, Any], body: Any, **_: Any) -> None:
        record = {"id": headers.get("id"), "n": body[0][0], "at": time.time()}
        store.rpush(SENT, json.dumps(record))

    return app


def sent(broker_url: str) -> list[dict[str, Any]]:
    """Every message beat sent so far, oldest first."""
    return runs(broker_url, SENT)


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app_from_env()
    raise AttributeError(name)
