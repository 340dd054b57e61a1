"""The Celery tasks that deliver callbacks and record their outcomes.

`timers.execute_callback(timer_id, attempt)` delivers one timer; `timers.execute_callbacks(claims)`
delivers several timers that came due together, concurrently, with one statement to start them and
one to record their outcomes. Messages carry only ids and claim numbers; PostgreSQL holds the truth.
Both are idempotent: a message for a timer that is not `executing` under that claim (finished,
canceled, claimed again since, unknown) changes nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from celery import Celery, Task
from sqlalchemy.exc import DBAPIError

from timers.config import Settings
from timers.delivery import deliver, new_session
from timers.models import HttpCallback, InvalidCallback, Timer, TimerStatus
from timers.store import TimerStore, database_engine, describe_database_error

log = logging.getLogger(__name__)

TASK_NAME = "timers.execute_callback"
BATCH_TASK_NAME = "timers.execute_callbacks"
# How long a worker keeps trying to record an outcome while the database is unreachable.
FINISH_RETRY_FOR = 300.0


@dataclass
class WorkerResources:
    """The store, HTTP sessions and delivery threads of one worker process, made on first use
    after the fork."""

    settings: Settings
    _pid: int | None = None
    _store: TimerStore | None = None
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def _ensure(self) -> None:
        if self._pid != os.getpid():
            # No ping per checkout: a dropped connection fails the statement, the pool is
            # invalidated, and the task's own retry opens a fresh one.
            engine = database_engine(self.settings.require_database_url(), pool_pre_ping=False)
            self._store = TimerStore(engine)
            self._local = threading.local()
            self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="delivery")
            self._pid = os.getpid()

    @property
    def store(self) -> TimerStore:
        self._ensure()
        assert self._store is not None
        return self._store

    @property
    def session(self) -> requests.Session:
        """This thread's HTTP session (kept alive between callbacks)."""
        self._ensure()
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = new_session()
        return session

    @property
    def pool(self) -> ThreadPoolExecutor:
        self._ensure()
        assert self._pool is not None
        return self._pool


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
        log.debug(
            "timer %s completed (%.0f ms after due)",
            tid,
            late.total_seconds() * 1000,
            extra=context,
        )
        return "completed"
    log.info("timer %s failed: %s", tid, error, extra=context)
    return "failed"


def execute_callbacks(
    resources: WorkerResources, claims: list[list[Any]]
) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Deliver the callbacks of several claimed timers at once; returns counts by outcome and the
    claims another worker is delivering right now (to be checked again after its lease)."""
    store = resources.store
    settings = resources.settings
    parsed: list[tuple[uuid.UUID, int]] = []
    counts = {"completed": 0, "failed": 0, "ignored": 0, "malformed": 0}
    for claim in claims if isinstance(claims, list) else []:
        try:
            raw_id, attempt = claim
            parsed.append((uuid.UUID(str(raw_id)), int(attempt)))
        except (TypeError, ValueError):
            log.error("dropping malformed claim %r", claim)
            counts["malformed"] += 1
    started = store.begin_deliveries(parsed, settings.delivery_lease)
    busy: list[tuple[str, int]] = []
    started_ids = {t.id for t in started}
    for tid, attempt in parsed:
        if tid in started_ids:
            continue
        current = store.find(tid)
        if (
            current is not None
            and current.status is TimerStatus.EXECUTING
            and (current.attempts == attempt)
        ):
            busy.append((str(tid), attempt))
        else:
            counts["ignored"] += 1

    def run(timer: Timer) -> tuple[uuid.UUID, int, str | None]:
        try:
            callback = HttpCallback.from_config(timer.callback_config)
        except InvalidCallback as exc:
            return timer.id, timer.attempts, f"invalid callback_config: {exc}"
        return (
            timer.id,
            timer.attempts,
            deliver(resources.session, timer.id, callback, settings.callback_timeout),
        )

    outcomes = list(resources.pool.map(run, started))
    _finish_many(store, outcomes)
    for tid, _attempt, error in outcomes:
        counts["completed" if error is None else "failed"] += 1
        if error is not None:
            log.info("timer %s failed: %s", tid, error, extra={"timer_id": str(tid)})
    log.info("delivered %d callbacks: %s", len(outcomes), counts)
    return counts, busy


def _finish_many(store: TimerStore, outcomes: list[tuple[uuid.UUID, int, str | None]]) -> None:
    deadline = time.monotonic() + FINISH_RETRY_FOR
    while True:
        try:
            store.finish_many(outcomes)
            return
        except DBAPIError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning(
                "recording the outcomes of %d timers failed (%s); retrying",
                len(outcomes),
                describe_database_error(exc),
            )
            time.sleep(1.0)


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

    @app.task(name=BATCH_TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
    def execute_callbacks_task(self: Task, claims: list[list[Any]]) -> dict[str, int]:
        try:
            counts, busy = execute_callbacks(resources, claims)
        except DBAPIError as exc:
            log.warning(
                "database error for %d timers: %s; retrying",
                len(claims),
                describe_database_error(exc),
            )
            raise self.retry(exc=exc, countdown=2, max_retries=None) from None
        for timer_id, attempt in busy:
            # Delivered elsewhere right now: check each again after that delivery's lease.
            execute_callback_task.apply_async(
                (timer_id, attempt), countdown=resources.settings.delivery_lease
            )
        return counts
