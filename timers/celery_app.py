"""The Celery app. `create_celery_app(settings)` builds one; `celery -A timers.celery_app` gets one
built from the environment when it looks up `app` (never at import time). The app itself, its
tasks and what they run are in `timers.worker`."""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery

from timers.config import load_settings
from timers.worker.app import create_celery_app
from timers.worker.enqueuer import BATCH_TASK_NAME

__all__ = ["BATCH_TASK_NAME", "create_celery_app"]


@functools.cache
def _app_from_env() -> Celery:
    return create_celery_app(load_settings())


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        return _app_from_env()
    raise AttributeError(name)
