"""Plain `celery beat` in the schedules workload: the user's app (bench/user_app.py) with
`BENCH_BEAT_ENTRIES` entries in its `beat_schedule`, entry `s<n>` a crontab every minute calling
the user's task with `n`, as the timers side's schedule `n` does.

    BENCH_USER_BROKER_URL=redis://127.0.0.1:6379/0 BENCH_BEAT_ENTRIES=10000 \
        celery -A bench.beat_app beat -s /tmp/beat-schedule
"""

from __future__ import annotations

import functools
import os
from typing import Any

from celery import Celery
from celery.schedules import crontab

from bench.user_app import TASK, create_app


def beat_schedule(count: int) -> dict[str, dict[str, Any]]:
    return {f"s{n}": {"task": TASK, "schedule": crontab(), "args": [n]} for n in range(count)}


@functools.cache
def _app_from_env() -> Celery:
    app = create_app(os.environ["BENCH_USER_BROKER_URL"])
    app.conf.beat_schedule = beat_schedule(int(os.environ.get("BENCH_BEAT_ENTRIES", "10000")))
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app_from_env()
    raise AttributeError(name)
