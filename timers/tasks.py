"""The Celery task `timers.execute_callback`: deliver one timer's callback and record the outcome.

The message carries only the timer id; PostgreSQL holds the truth. The task is idempotent: a message
for a timer that is not `executing` (already finished, canceled, unknown) changes nothing.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field

import requests
from celery import Celery, Task
from sqlalchemy.exc import DBAPIError

from timers.config import Settings
from timers.delivery import deliver, new_session
from timers.models import HttpCallback, InvalidCallback, TimerStatus
from timers.store import TimerNotFound, TimerStore, database_engine

log = logging.getLogger(__name__)

TASK_NAME = "timers.execute_callback"
FINISH_RETRY_DELAYS = (0.5, 1, 2, 4, 8)


@dataclass
class WorkerResources:
    """The store and HTTP session of one worker process, made on first use after the fork."""

    settings: Settings
    _pid: int | None = None
    _store: TimerStore | None = None
    _session: requests.Session | None = field(default=None, repr=False)

    def _ensure(self) -> None:
        if self._pid != os.getpid():
            self._store = TimerStore(database_engine(self.settings.require_database_url()))
            self._session = new_session()
            self._pid = os.getpid()

    @property
    def store(self) -> TimerStore:
        self._ensure()
        assert self._store is not None
        return self._store

    @property
    def session(self) -> requests.Session:
        self._ensure()
        assert self._session is not None
        return self._session


def execute_callback(resources: WorkerResources, timer_id: str) -> str:
    """Deliver the callback of timer `timer_id` if it is `executing`; returns what happened."""
    try:
        tid = uuid.UUID(str(timer_id))
    except ValueError:
        log.error("dropping message with malformed timer id %r", timer_id)
        return "malformed"
    store = resources.store
    try:
        timer = store.get(tid)
    except TimerNotFound:
        log.warning("dropping message for unknown timer %s", tid, extra={"timer_id": str(tid)})
        return "unknown"
    if timer.status is not TimerStatus.EXECUTING:
        log.info(
            "timer %s is %s; message ignored", tid, timer.status.value, extra={"timer_id": str(tid)}
        )
        return "ignored"
    try:
        callback = HttpCallback.from_config(timer.callback_config)
    except InvalidCallback as exc:
        error: str | None = f"invalid callback_config: {exc}"
    else:
        error = deliver(resources.session, tid, callback, resources.settings.callback_timeout)
    _finish(store, tid, error)
    if error is None:
        log.info("timer %s completed", tid, extra={"timer_id": str(tid)})
        return "completed"
    log.info("timer %s failed: %s", tid, error, extra={"timer_id": str(tid)})
    return "failed"


def _finish(store: TimerStore, timer_id: uuid.UUID, error: str | None) -> None:
    # The callback was delivered: record it without redelivering, riding out a short database outage.
    for delay in (*FINISH_RETRY_DELAYS, None):
        try:
            store.finish(timer_id, error)
            return
        except DBAPIError as exc:
            if delay is None:
                raise
            log.warning(
                "recording outcome of timer %s failed (%s); retrying in %ss",
                timer_id,
                exc.orig,
                delay,
                extra={"timer_id": str(timer_id)},
            )
            time.sleep(delay)


def register_tasks(app: Celery, resources: WorkerResources) -> None:
    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
    def execute_callback_task(self: Task, timer_id: str) -> str:
        try:
            return execute_callback(resources, timer_id)
        except DBAPIError as exc:
            # Nothing was delivered if reading the timer failed; try again shortly.
            log.warning("database error for timer %s: %s; retrying", timer_id, exc.orig)
            raise self.retry(exc=exc, countdown=2, max_retries=60) from None
