"""The baseline: plain Celery `apply_async(eta=…)` of the task a Celery user would write to make the
same callback — a synchronous `requests.post` of the JSON payload to the same URL with the same
`X-Timer-Id` and `Content-Type: application/json` headers (plus the timer's own), a 30 s timeout,
late acks and reject-on-worker-lost. No PostgreSQL, no recording of outcomes, no retries.

Its worker runs as shipped, with the same `celeryconfig` as the timers workers (prefork pool, one
process per CPU, prefetch 1), so each request holds a pool process for as long as its receiver
takes to answer (up to the 30 s timeout).

    celery -A bench.eta_app worker
"""

from __future__ import annotations

import functools
import os
from typing import Any

import requests
from celery import Celery

QUEUE = "bench-eta"
TIMEOUT = 30.0


def create_app(broker_url: str) -> Celery:
    app = Celery("bench-eta", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.broker_url = broker_url
    app.conf.task_default_queue = QUEUE

    @app.task(name="bench.post", acks_late=True, reject_on_worker_lost=True, shared=False)
    def post(timer_id: str, config: dict[str, Any]) -> int:
        headers = {
            **config.get("headers", {}),
            "Content-Type": "application/json",
            "X-Timer-Id": timer_id,
        }
        response = requests.post(
            config["url"], json=config.get("payload"), headers=headers, timeout=TIMEOUT
        )
        response.raise_for_status()
        return response.status_code

    return app


@functools.cache
def _app_from_env() -> Celery:
    return create_app(os.environ["REDIS_URL"])


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app_from_env()
    raise AttributeError(name)
