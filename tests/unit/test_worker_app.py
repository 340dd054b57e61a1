"""The worker's Celery app keeps its tasks to itself: another app made in the same process (a
second timers app, or the user's own) neither gets them nor lends its own to it."""

from __future__ import annotations

from celery import Celery

from timers.config import Settings
from timers.worker.app import create_celery_app
from timers.worker.enqueuer import BATCH_TASK_NAME, TASK_NAME

NOWHERE = "postgresql://nobody@127.0.0.1:9/none"  # building an app contacts nothing


def test_each_app_has_its_own_tasks_and_lends_them_to_no_other() -> None:
    first = create_celery_app(Settings(database_url=NOWHERE, redis_url="memory://"))
    second = create_celery_app(Settings(database_url=NOWHERE, redis_url="memory://"))
    users = Celery("shop", broker="memory://", set_as_current=False)
    for name in (BATCH_TASK_NAME, TASK_NAME):
        assert first.tasks[name] is not second.tasks[name]
        assert first.tasks[name].app is first and second.tasks[name].app is second
        assert name not in users.tasks
