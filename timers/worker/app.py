"""The worker's Celery app: `create_celery_app(settings)` builds one with the callback tasks
registered and the worker's signals connected (`timers.celery_app` builds it from the
environment for `celery -A timers.celery_app`)."""

from __future__ import annotations

import gc
import os
from typing import Any

from celery import Celery, signals

from timers.config import Settings
from timers.logs import use_format
from timers.metrics import WorkerMetricsServer
from timers.storage import StoreError
from timers.store import TimerStore, database_engine
from timers.worker.tasks import WorkerResources, register_tasks

__all__ = ["create_celery_app"]


def create_celery_app(settings: Settings) -> Celery:
    app = Celery("timers", set_as_current=False)
    app.config_from_object("timers.celeryconfig")
    app.conf.broker_url = settings.require_broker_url()
    # An unacknowledged message (its worker died) goes to another worker after this long (Redis).
    app.conf.broker_transport_options = {"visibility_timeout": settings.redelivery_timeout}
    if settings.worker_concurrency is not None:
        app.conf.worker_concurrency = settings.worker_concurrency
    resources = WorkerResources(settings)
    register_tasks(app, resources)

    def check_database(sender: Any, **_: Any) -> None:
        # A worker that can't reach PostgreSQL would fail every task: refuse to start instead.
        if getattr(sender, "app", None) is not app:
            return
        engine = database_engine(settings.require_database_url())
        try:
            TimerStore(engine).ping()
        except StoreError as exc:
            raise SystemExit(f"timers worker: cannot reach PostgreSQL: {exc}") from None
        finally:
            engine.dispose()

    def drain(**_: Any) -> None:
        # A pool process (or a solo/threads worker) that stops lets its running deliveries finish
        # and records them, instead of leaving them to recovery.
        resources.close()

    def settle(**_: Any) -> None:
        # A pool process starts with everything imported: keep those long-lived objects out of
        # the garbage collector's full collections (tens of ms each, paid by deliveries' tails).
        gc.freeze()

    def log_format(logger: Any, **_: Any) -> None:
        use_format(logger, settings.log_format)

    signals.after_setup_logger.connect(log_format, weak=False)
    signals.after_setup_task_logger.connect(log_format, weak=False)
    signals.worker_init.connect(check_database, weak=False)
    if settings.metrics_port is not None:
        metrics = WorkerMetricsServer(settings.metrics_port)

        def serve_metrics(sender: Any, **_: Any) -> None:
            if getattr(sender, "app", None) is app:
                metrics.start()  # before the pool forks: its processes write where it reads

        def process_gone(**_: Any) -> None:
            metrics.process_stopped(os.getpid())

        signals.worker_init.connect(serve_metrics, weak=False)
    signals.worker_process_init.connect(settle, weak=False)
    signals.worker_process_shutdown.connect(drain, weak=False)
    signals.worker_shutdown.connect(drain, weak=False)
    if settings.metrics_port is not None:
        # After the drain: the last deliveries count too.
        signals.worker_process_shutdown.connect(process_gone, weak=False)
        signals.worker_shutdown.connect(lambda **_: metrics.stop(), weak=False)
    return app
