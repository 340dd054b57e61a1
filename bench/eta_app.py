"""The baseline: plain Celery `apply_async(eta=…)` of a task that makes the same HTTP POST as
`timers.execute_callback` (same payload, same headers, same worker settings), with no PostgreSQL.

    celery -A bench.eta_app worker
"""

from __future__ import annotations

import functools
import os
from typing import Any

from celery import Celery

from timers.delivery import deliver, new_session
from timers.models import HttpCallback

QUEUE = "bench-eta"


def create_app(broker_url: str) -> Celery:
    app = Celery("bench-eta", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.broker_url = broker_url
    app.conf.task_default_queue = QUEUE
    session = new_session()

    @app.task(name="bench.post", acks_late=True, reject_on_worker_lost=True)
    def post(timer_id: str, config: dict[str, Any]) -> str | None:
        import uuid

        return deliver(session, uuid.UUID(timer_id), HttpCallback.from_config(config), 30.0)

    return app


@functools.cache
def _app_from_env() -> Celery:
    return create_app(os.environ["REDIS_URL"])


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app_from_env()
    raise AttributeError(name)
