"""The Celery task that starts callback deliveries.

`timers.execute_callbacks(claims)` takes (timer id, claim number) pairs, marks those still
`executing` under that claim as started (one statement, which also gives this worker a lease on
them) and hands them to this process's `DeliveryEngine`; it returns as soon as they are handed
over, so the task's pool slot never waits for a receiver. A lone timer is a batch of one.

Messages carry only ids and claim numbers; PostgreSQL holds the truth. The task is idempotent: a
claim that is already started (a redelivered copy), finished, canceled or claimed again since
changes nothing. `timers.execute_callback(timer_id, attempt)` is kept for messages queued by
earlier versions and goes the same way.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, Task

from timers.callbacks import CallbackRules, DeliveryContext
from timers.config import Settings
from timers.metrics import DeliveryMetrics
from timers.outbound import OutboundPolicy
from timers.storage import Claim, StoreUnavailable
from timers.store import TimerStore, database_engine
from timers.worker.engine import DeliveryEngine
from timers.worker.enqueuer import BATCH_TASK_NAME, TASK_NAME
from timers.worker.outcomes import Outcomes
from timers.worker.recorder import OutcomeRecorder

log = logging.getLogger(__name__)


@dataclass
class WorkerResources:
    """The store, delivery engine and outcome recorder of one worker process, made on first use
    after the fork (a pool process must not inherit its parent's connections or threads)."""

    settings: Settings
    _pid: int | None = None
    _store: TimerStore | None = None
    _engine: DeliveryEngine | None = None
    _recorder: OutcomeRecorder | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _ensure(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # No ping per checkout: a dropped connection fails the statement, the pool is
            # invalidated, and the next statement opens a fresh one.
            engine = database_engine(self.settings.require_database_url(), pool_pre_ping=False)
            store = TimerStore(engine)
            # The engine leaves outcomes in `outcomes`; the recorder writes them down and renews
            # the leases of the deliveries the engine is still running.
            outcomes = Outcomes()
            deliveries = DeliveryEngine(
                max_per_destination=self.settings.max_in_flight_per_host,
                on_outcome=outcomes.put,
                context=DeliveryContext(
                    timeout=self.settings.callback_timeout,
                    policy=OutboundPolicy(self.settings.allowed_networks),
                    task_broker_url=self.settings.task_broker,
                    signing_secrets=self.settings.signing_keys(),
                    owner_secrets={
                        owner: self.settings.signing_keys(owner)
                        for owner, _ in self.settings.signing_secrets
                        if owner is not None
                    },
                    nats_url=self.settings.nats_server,
                ),
                rules=CallbackRules.from_settings(self.settings),
                default_retry=self.settings.default_retry,
                metrics=DeliveryMetrics(),
            )
            recorder = OutcomeRecorder(
                store, outcomes, lease=self.settings.delivery_lease, running=deliveries.running
            )
            self._store, self._engine, self._recorder = store, deliveries, recorder
            self._pid = os.getpid()

    @property
    def store(self) -> TimerStore:
        self._ensure()
        assert self._store is not None
        return self._store

    @property
    def deliveries(self) -> DeliveryEngine:
        self._ensure()
        assert self._engine is not None
        return self._engine

    def close(self) -> None:
        """Let running deliveries finish (up to the callback timeout) and write their outcomes."""
        with self._lock:
            if self._pid != os.getpid() or self._engine is None or self._recorder is None:
                return
            engine, recorder, store = self._engine, self._recorder, self._store
            self._pid = self._engine = self._recorder = self._store = None
        if not engine.close(self.settings.callback_timeout + 1):
            log.warning("stopping with deliveries still running; they will be fired again")
        unwritten = recorder.close(10.0)
        if unwritten:
            log.error(
                "stopping with %d outcomes not recorded (database unreachable); their timers "
                "will be fired again: %s",
                len(unwritten),
                ", ".join(str(o.timer_id) for o in unwritten),
            )
        if store is not None:
            store.engine.dispose()


def parse_claims(claims: Any) -> tuple[list[Claim], int]:
    """The well-formed (id, claim number) pairs of a message, and how many were malformed."""
    parsed: list[Claim] = []
    malformed = 0
    for claim in claims if isinstance(claims, list) else []:
        try:
            raw_id, attempt = claim
            parsed.append((uuid.UUID(str(raw_id)), int(attempt)))
        except (TypeError, ValueError):
            log.error("dropping malformed claim %r", claim)
            malformed += 1
    if not isinstance(claims, list):
        log.error("dropping malformed message %r", claims)
        malformed += 1
    return parsed, malformed


def start_deliveries(resources: WorkerResources, claims: Any) -> dict[str, int]:
    """Start the deliveries of these claims and hand them to the engine; counts by outcome."""
    parsed, malformed = parse_claims(claims)
    started = resources.store.begin_deliveries(parsed, resources.settings.delivery_lease)
    resources.deliveries.submit(started)
    if len(started) < len(parsed):
        log.info(
            "%d of %d claims were already started, finished or claimed again; ignored",
            len(parsed) - len(started),
            len(parsed),
        )
    return {"started": len(started), "ignored": len(parsed) - len(started), "malformed": malformed}


def register_tasks(app: Celery, resources: WorkerResources) -> None:
    def run(task: Task, claims: Any) -> dict[str, int]:
        try:
            return start_deliveries(resources, claims)
        except StoreUnavailable as exc:
            # Nothing was started: try again shortly (the claims stay `executing`).
            log.warning("database unreachable starting deliveries: %s; retrying", exc)
            raise task.retry(exc=exc, countdown=2, max_retries=None) from None

    @app.task(
        name=BATCH_TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, shared=False
    )
    def execute_callbacks_task(self: Task, claims: list[list[Any]]) -> dict[str, int]:
        return run(self, claims)

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, shared=False)
    def execute_callback_task(self: Task, timer_id: str, attempt: int | None = None) -> Any:
        return run(self, [[timer_id, attempt]])
