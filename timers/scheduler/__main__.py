"""The scheduler process: wiring, the start-up check, and the command line.

python -m timers.scheduler
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from timers.config import CALLBACKS_PER_TASK, CLAIM_BATCH, Settings, environment_help
from timers.metrics import SchedulerMetrics, serve
from timers.scheduler.cache import TimerCache
from timers.scheduler.execution import ExecutionLoop
from timers.scheduler.listener import ChangeListener
from timers.scheduler.loader import MemoryLoader
from timers.scheduler.recovery import Recovery
from timers.scheduler.retention import Retention
from timers.scheduler.runner import Scheduler
from timers.schedules.keeper import ScheduleKeeper
from timers.store import TimerStore
from timers.worker.enqueuer import CeleryEnqueuer

log = logging.getLogger("timers.scheduler")


def build_scheduler(
    settings: Settings,
    metrics: SchedulerMetrics | None = None,
    *,
    listen: bool = True,
    claim_batch_size: int = CLAIM_BATCH,
    callbacks_per_task: int = CALLBACKS_PER_TASK,
) -> tuple[Scheduler, Callable[[], None]]:
    """A scheduler wired to PostgreSQL and the Celery broker from `settings`, and its cleanup.

    `listen`: react to changes at once (LISTEN/NOTIFY) and wake at each timer's due time (off: poll,
    loading every load interval and ticking every execute interval); `claim_batch_size`: due timers
    claimed per UPDATE; `callbacks_per_task`: timers due together that travel in one Celery message.
    """
    from timers.celery_app import create_celery_app
    from timers.store import database_engine

    # No ping per checkout: the loops retry on error, and a dropped connection invalidates the pool.
    engine = database_engine(settings.require_database_url(), pool_pre_ping=False)
    store = TimerStore(engine)
    app = create_celery_app(settings)
    cache = TimerCache()
    metrics = metrics or SchedulerMetrics()
    metrics.watch_cache(cache.__len__)
    metrics.watch_store(store.due_backlog, lambda: store.counts()[0]["pending"])
    enqueuer = CeleryEnqueuer(app, per_task=callbacks_per_task)
    recovery = Recovery(
        enqueue_timeout=settings.enqueue_timeout,
        lease=settings.delivery_lease,
        queue_idle=enqueuer.queue_idle,
        misfire_policy=settings.misfire_policy,
        recovery_window=settings.recovery_window,
    )
    keeper = ScheduleKeeper(
        store.schedules,
        lookahead=settings.lookahead,
        registry=metrics.registry,
        background=True,
    )
    metrics.watch_schedules(keeper.store.counts)
    loader = MemoryLoader(
        store,
        cache,
        recovery_window=settings.recovery_window,
        lookahead=settings.lookahead,
        fire_overdue=settings.misfire_policy == "fire",
        recovery=recovery,
        metrics=metrics,
        top_up=keeper.sweep,
    )
    stopping = threading.Event()
    execution = ExecutionLoop(
        store,
        cache,
        enqueuer,
        stopping=stopping.is_set,
        lookahead=settings.lookahead,
        batch_size=claim_batch_size,
        metrics=metrics,
        after_claim=keeper.after_claim,
    )
    wake = threading.Event() if listen else None
    listener = ChangeListener(store, cache, loader, wake) if wake is not None else None
    scheduler = Scheduler(
        loader,
        execution,
        load_interval=settings.load_interval,
        execute_interval=settings.execute_interval,
        stop=stopping,
        listener=listener,
        wake=wake,
        retention=Retention(store, settings.retention, metrics=metrics)
        if settings.retention
        else None,
    )

    def close() -> None:
        enqueuer.close()
        engine.dispose()

    return scheduler, close


def check_services(settings: Settings) -> str | None:
    """A one-line reason if PostgreSQL or the broker can't be reached, else None."""
    from sqlalchemy.engine import make_url

    from timers.celery_app import create_celery_app
    from timers.storage import StoreError
    from timers.store import database_engine

    engine = database_engine(settings.require_database_url())
    try:
        TimerStore(engine).ping()
    except StoreError as exc:
        where = make_url(settings.require_database_url()).render_as_string(hide_password=True)
        return f"cannot reach PostgreSQL at {where}: {exc}"
    finally:
        engine.dispose()
    app = create_celery_app(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        from kombu.utils.url import maybe_sanitize_url

        where = maybe_sanitize_url(settings.require_broker_url())
        return f"cannot reach the Celery broker at {where}: {exc}"
    return None


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "python -m timers.scheduler",
    description: str = "Run the timers scheduler: load near-term timers into memory and enqueue "
    "each as a Celery task when it is due. Configured by the environment.",
    listen: bool = True,
    claim_batch_size: int = CLAIM_BATCH,
    callbacks_per_task: int = CALLBACKS_PER_TASK,
) -> int:
    """The scheduler process; the keyword arguments are `build_scheduler`'s (production's by
    default)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    from timers.config import ConfigError, load_settings
    from timers.logs import configure_logging

    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        problem = check_services(settings)
    except ConfigError as exc:
        print(f"timers scheduler: {exc}", file=sys.stderr)
        return 2
    if problem:
        print(f"timers scheduler: {problem}", file=sys.stderr)
        return 1
    metrics = SchedulerMetrics()
    if settings.metrics_port is not None:
        try:
            serve(settings.metrics_port, metrics.registry)
        except OSError as exc:
            print(
                f"timers scheduler: TIMERS_METRICS_PORT {settings.metrics_port}: {exc}",
                file=sys.stderr,
            )
            return 1
    scheduler, close = build_scheduler(
        settings,
        metrics,
        listen=listen,
        claim_batch_size=claim_batch_size,
        callbacks_per_task=callbacks_per_task,
    )

    def on_signal(signum: int, _: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        scheduler.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log.info(
        "scheduler started (%s, claims of up to %d, up to %d timers a task, load every %gs, tick "
        "every %gs, lookahead %gs, recovery window %gs, misfire policy %s, retention %s)",
        "notifications and wake-ups" if listen else "polling",
        claim_batch_size,
        callbacks_per_task,
        settings.load_interval,
        settings.execute_interval,
        settings.lookahead,
        settings.recovery_window,
        settings.misfire_policy,
        f"{settings.retention:g}s" if settings.retention else "off",
    )
    # Everything loaded so far lives as long as the process: keep it out of the garbage
    # collector's way, so that its full collections don't pause a tick for tens of ms.
    gc.freeze()
    scheduler.start()
    while not scheduler.wait(1.0):
        pass
    scheduler.stop()
    close()
    log.info("scheduler stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
