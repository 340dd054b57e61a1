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
from timers.store import TimerStore, database_engine, describe_database_error

log = logging.getLogger(__name__)

TASK_NAME = "timers.execute_callback"
# How long a worker keeps trying to record an outcome while the database is unreachable.
FINISH_RETRY_FOR = 300.0


@dataclass
class WorkerResources:
    """The store and HTTP session of one worker process, made on first use after the fork."""

    settings: Settings
    _pid: int | None = None
    _store: TimerStore | None = None
    _session: requests.Session | None = field(default=None, repr=False)

    def _ensure(self) -> None:
        if self._pid != os.getpid():
            # No ping per checkout: a dropped connection fails the statement, the pool is
            # invalidated, and the task's own retry opens a fresh one.
            engine = database_engine(self.settings.require_database_url(), pool_pre_ping=False)
            self._store = TimerStore(engine)
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


class DeliveryBusy(Exception):
    """Another worker started this delivery less than a lease ago; try again after it."""


def execute_callback(resources: WorkerResources, timer_id: str, attempt: int | None = None) -> str:
    """Deliver the callback of timer `timer_id` if it is `executing` under claim `attempt`;
    returns what happened. Raises DeliveryBusy when another worker holds the delivery's lease."""
    try:
        tid = uuid.UUID(str(timer_id))
        if attempt is not None:
            attempt = int(attempt)
    except (TypeError, ValueError):
        log.error("dropping message with malformed timer id %r (attempt %r)", timer_id, attempt)
        return "malformed"
    context = {"timer_id": str(tid)}
    store = resources.store
    settings = resources.settings
    timer = store.begin_delivery(tid, attempt, settings.delivery_lease)
    if timer is None:
        current = store.find(tid)
        if current is None:
            log.warning("dropping message for unknown timer %s", tid, extra=context)
            return "unknown"
        if current.status is not TimerStatus.EXECUTING:
            log.info("timer %s is %s; message ignored", tid, current.status.value, extra=context)
            return "ignored"
        if attempt is not None and current.attempts != attempt:
            log.info(
                "timer %s was claimed again (attempt %d, message for %d); message ignored",
                tid,
                current.attempts,
                attempt,
                extra=context,
            )
            return "stale"
        raise DeliveryBusy(str(tid))
    try:
        callback = HttpCallback.from_config(timer.callback_config)
    except InvalidCallback as exc:
        error: str | None = f"invalid callback_config: {exc}"
    else:
        error = deliver(resources.session, tid, callback, settings.callback_timeout)
    _finish(store, tid, error, timer.attempts)
    if error is None:
        late = (timer.started_at or timer.execute_at) - timer.execute_at
        log.info(
            "timer %s completed (%.0f ms after due)",
            tid,
            late.total_seconds() * 1000,
            extra=context,
        )
        return "completed"
    log.info("timer %s failed: %s", tid, error, extra=context)
    return "failed"


def _finish(store: TimerStore, timer_id: uuid.UUID, error: str | None, attempt: int) -> None:
    # The callback was delivered: record it without redelivering, riding out a database outage
    # (retrying often, so the outcome lands soon after the database is back).
    deadline = time.monotonic() + FINISH_RETRY_FOR
    while True:
        try:
            store.finish(timer_id, error, attempt)
            return
        except DBAPIError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning(
                "recording the outcome of timer %s failed (%s); retrying",
                timer_id,
                describe_database_error(exc),
                extra={"timer_id": str(timer_id)},
            )
            time.sleep(1.0)


def register_tasks(app: Celery, resources: WorkerResources) -> None:
    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
    def execute_callback_task(self: Task, timer_id: str, attempt: int | None = None) -> str:
        try:
            return execute_callback(resources, timer_id, attempt)
        except DeliveryBusy:
            # Another worker is delivering it (a redelivered copy of its message): come back
            # after its lease, when it has either finished or is known to be dead.
            log.info("timer %s is being delivered elsewhere; checking again later", timer_id)
            raise self.retry(
                countdown=resources.settings.delivery_lease, max_retries=None
            ) from None
        except DBAPIError as exc:
            # Nothing was delivered if starting the delivery failed; try again shortly.
            log.warning(
                "database error for timer %s: %s; retrying", timer_id, describe_database_error(exc)
            )
            raise self.retry(exc=exc, countdown=2, max_retries=None) from None
