"""The scheduler process: a memory loader and an execution loop sharing one in-memory cache.

    python -m timers.scheduler

Two threads, not asyncio: the work is blocking database and broker I/O through libraries that are
synchronous (psycopg2, kombu), each loop does one thing at a time, and a thread per loop keeps them
independent (a slow load never delays a tick) with nothing to bridge. The cache's lock is held only
to copy or swap a dict, never across I/O.

- MemoryLoader, every `load_interval`: the pending timers due in
  [now - recovery_window, now + lookahead] replace the whole cache.
- ExecutionLoop, every `execute_interval` at a fixed rate: the cached timers that are due are claimed
  in PostgreSQL with one conditional statement, removed from the cache, and only the claimed ones are
  enqueued as Celery tasks. A timer that could not be enqueued is released back to `pending`.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import math
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from timers.config import CALLBACKS_PER_TASK, Settings, environment_help
from timers.models import DueTime, Timer
from timers.store import Change, RecoveryRules, TimerStore

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# The cache holds what the loader reads (DueTime) or full timers (from notifications and claims).
Cached = DueTime | Timer

# Timers coming due within this much of each other are claimed together: a few milliseconds of
# lateness buys one statement and one message for many timers under load.
MIN_WAKE_GAP = 0.01

# Timers claimed by one statement; a stop request waits for at most one batch to be enqueued.
CLAIM_BATCH_SIZE = 500


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- pure decisions ----------------------------------------------------------------------------


def near_term_window(
    now: datetime, recovery_window: float, lookahead: float
) -> tuple[datetime, datetime]:
    """The `execute_at` range the loader keeps in memory: [now - recovery_window, now + lookahead]."""
    return now - timedelta(seconds=recovery_window), now + timedelta(seconds=lookahead)


def next_deadline(start: float, interval: float, now: float) -> float:
    """The first point of the grid start + k*interval strictly after `now`.

    Ticks stay on the grid however long each one takes (no drift); a tick that overran whole
    intervals skips the grid points it missed instead of firing a burst.
    """
    return start + (math.floor((now - start) / interval) + 1) * interval


# -- the cache ---------------------------------------------------------------------------------


class TimerCache:
    """The near-term timers by id, with a heap on `execute_at` so that finding the due ones and the
    earliest one costs O(log n), however many timers are cached. Thread-safe; the lock is held only
    to read or change these two structures, never across I/O.

    A reload replaces everything with a snapshot read from the database; changes made to the cache
    while that snapshot was being read (by the change listener or the execution loop) are newer,
    so they are applied again on top of it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timers: dict[uuid.UUID, Cached] = {}
        # (execute_at, id); an entry whose timer was removed or moved is stale and skipped.
        self._heap: list[tuple[datetime, uuid.UUID]] = []
        self._since_snapshot: dict[uuid.UUID, Cached | None] | None = None

    def begin_snapshot(self) -> None:
        """Call before reading the snapshot that `replace` will install."""
        with self._lock:
            self._since_snapshot = {}

    def abandon_snapshot(self) -> None:
        """The snapshot could not be read: stop recording changes for it."""
        with self._lock:
            self._since_snapshot = None

    def replace(self, timers: Iterable[Cached]) -> None:
        fresh = {t.id: t for t in timers}
        with self._lock:
            for timer_id, timer in (self._since_snapshot or {}).items():
                if timer is None:
                    fresh.pop(timer_id, None)
                else:
                    fresh[timer_id] = timer
            self._since_snapshot = None
            heap = [(t.execute_at, t.id) for t in fresh.values()]
            heapq.heapify(heap)
            self._timers, self._heap = fresh, heap

    def upsert(self, timers: Iterable[Cached]) -> None:
        with self._lock:
            for timer in timers:
                self._timers[timer.id] = timer
                heapq.heappush(self._heap, (timer.execute_at, timer.id))
                if self._since_snapshot is not None:
                    self._since_snapshot[timer.id] = timer

    def remove(self, timer_ids: Iterable[uuid.UUID]) -> None:
        with self._lock:
            for timer_id in timer_ids:
                self._timers.pop(timer_id, None)
                if self._since_snapshot is not None:
                    self._since_snapshot[timer_id] = None

    def _current(self, entry: tuple[datetime, uuid.UUID]) -> Cached | None:
        timer = self._timers.get(entry[1])
        return timer if timer is not None and timer.execute_at == entry[0] else None

    def due(self, now: datetime) -> list[Cached]:
        """The cached timers with `execute_at <= now`, earliest first (they stay cached)."""
        due: list[Cached] = []
        with self._lock:
            seen: set[uuid.UUID] = set()
            kept = []
            while self._heap and self._heap[0][0] <= now:
                entry = heapq.heappop(self._heap)
                timer = self._current(entry)
                if timer is not None and timer.id not in seen:
                    seen.add(timer.id)
                    due.append(timer)
                    kept.append(entry)
            for entry in kept:
                heapq.heappush(self._heap, entry)
        return due

    def earliest(self) -> datetime | None:
        """The earliest `execute_at` in the cache."""
        with self._lock:
            while self._heap and self._current(self._heap[0]) is None:
                heapq.heappop(self._heap)
            return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._timers)

    def __contains__(self, timer_id: object) -> bool:
        with self._lock:
            return timer_id in self._timers


# -- the loops ---------------------------------------------------------------------------------


def run_every(
    interval: float,
    action: Callable[[], Any],
    stop: threading.Event,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    wait: Callable[[float], bool] | None = None,
) -> None:
    """Call `action` now and then at start + k*interval until `stop` is set.

    `action` must not raise (each loop catches its own errors). `wait(seconds)` returns True when it
    was interrupted by a stop; tests pass a fake one together with a fake `monotonic`.
    """
    wait = wait or stop.wait
    start = monotonic()
    while not stop.is_set():
        action()
        if wait(max(0.0, next_deadline(start, interval, monotonic()) - monotonic())):
            return


class Enqueuer(Protocol):
    def ready(self) -> bool:
        """Whether the broker can take messages now (after a refused enqueue, it is probed)."""
        ...

    def enqueue(self, timers: Sequence[Timer]) -> list[uuid.UUID]:
        """Send the callback tasks of these timers; return the ids that could not be sent (all
        from the first refused message on)."""
        ...


class MemoryLoader:
    """Replaces the cache with the near-term pending timers, and in the same statement recovers
    stranded ones (see `RecoveryRules`): a worker that died costs at most a lease plus a load
    period, and an idle scheduler costs PostgreSQL one statement per load."""

    def __init__(
        self,
        store: TimerStore,
        cache: TimerCache,
        *,
        recovery_window: float,
        lookahead: float,
        clock: Clock = utc_now,
        fire_overdue: bool = False,
        recovery: Recovery | None = None,
    ) -> None:
        self.fire_overdue = fire_overdue
        self.store = store
        self.cache = cache
        self.recovery_window = recovery_window
        self.lookahead = lookahead
        self.clock = clock
        self.recovery = recovery

    def window(self) -> tuple[datetime, datetime]:
        return near_term_window(self.clock(), self.recovery_window, self.lookahead)

    def load(self) -> int | None:
        """Replace the cache with the near-term pending timers; None if the database failed."""
        rules = None
        if self.recovery is not None:
            self.recovery.fail_missed(self.store)
            rules = self.recovery.rules()
        start, end = self.window()
        self.cache.begin_snapshot()
        try:
            # Under the `fire` misfire policy, timers overdue beyond the recovery window are
            # loaded too (oldest first) and fire late; under `skip`, they were failed just now.
            near = self.store.load_near_term(
                None if self.fire_overdue else start, end, recovery=rules
            )
        except Exception:
            self.cache.abandon_snapshot()
            log.warning(
                "memory loader: loading near-term timers failed; retrying next period",
                exc_info=True,
            )
            return None
        for timer in near.recovered:
            log.warning(
                "Recovered timer %s (%s); it will fire again",
                timer.id,
                timer.reason,
                extra={"timer_id": str(timer.id)},
            )
        overdue = sum(1 for t in near.timers if t.execute_at < start)
        if overdue:
            log.warning(
                "%d timers are overdue by more than the recovery window; firing them late", overdue
            )
        self.cache.replace(near.timers)
        log.info("Loaded %d timers into cache", len(near.timers))
        return len(near.timers)


class Recovery:
    """What the loader needs to recover stranded timers: the timeouts, and a look at the broker
    (is the callback queue idle?) so that messages merely waiting in a long queue are not taken
    for lost."""

    def __init__(
        self,
        *,
        enqueue_timeout: float,
        lease: float,
        queue_idle: Callable[[], bool],
        misfire_policy: str = "fire",
        recovery_window: float = 300.0,
    ) -> None:
        self.enqueue_timeout = enqueue_timeout
        self.lease = lease
        self.queue_idle = queue_idle
        self.misfire_policy = misfire_policy
        self.recovery_window = recovery_window

    def rules(self) -> RecoveryRules:
        try:
            idle = self.queue_idle()
        except Exception:
            log.debug("could not look at the callback queue", exc_info=True)
            idle = False
        return RecoveryRules(self.enqueue_timeout, self.lease, idle)

    def fail_missed(self, store: TimerStore) -> None:
        """Under the `skip` misfire policy, fail the timers overdue beyond the recovery window."""
        if self.misfire_policy != "skip":
            return
        try:
            missed = store.fail_missed(self.recovery_window)
        except Exception:
            log.warning("marking missed timers failed; retrying next period", exc_info=True)
            return
        if missed:
            log.warning("Marked %d timers failed as missed (misfire policy skip)", missed)


class ExecutionLoop:
    def __init__(
        self,
        store: TimerStore,
        cache: TimerCache,
        enqueuer: Enqueuer,
        *,
        clock: Clock = utc_now,
        batch_size: int = CLAIM_BATCH_SIZE,
        stopping: Callable[[], bool] = lambda: False,
        lookahead: float = 60.0,
    ) -> None:
        self.last_tick_at: datetime | None = None
        self.lookahead = lookahead
        self.store = store
        self.cache = cache
        self.enqueuer = enqueuer
        self.clock = clock
        self.batch_size = batch_size
        self.stopping = stopping

    def tick(self) -> int:
        """Claim and enqueue the cached timers that are due; return how many were enqueued.

        Large backlogs go in batches, and a stop request is honoured between batches: what is
        claimed is always enqueued (or released) before the tick returns. While the broker refuses
        messages nothing is claimed (the timers stay cached), and a refused enqueue ends the tick.
        """
        now = self.clock()
        self.last_tick_at = now
        due = self.cache.due(now)
        if not due or not self.enqueuer.ready():
            return 0
        log.info("Executing %d due timers", len(due))
        enqueued = 0
        for start in range(0, len(due), self.batch_size):
            if start and self.stopping():
                break
            sent, refused = self._fire([t.id for t in due[start : start + self.batch_size]])
            enqueued += sent
            if refused:
                break
        return enqueued

    def _fire(self, ids: list[uuid.UUID]) -> tuple[int, bool]:
        """Claim and enqueue these timers: how many were enqueued, and whether the broker refused."""
        try:
            claimed = self.store.claim_due(ids)
        except Exception:
            # Left in the cache: the next tick tries them again.
            log.warning(
                "execution loop: claiming %d timers failed; retrying next tick",
                len(ids),
                exc_info=True,
            )
            return 0, False
        self.cache.remove(ids)
        if len(claimed) < len(ids):
            self._refresh_unclaimed(set(ids) - {t.id for t in claimed})
        if not claimed:
            return 0, False
        try:
            failed = set(self.enqueuer.enqueue(claimed))
        except Exception:
            log.exception("execution loop: enqueueing %d timers failed", len(claimed))
            failed = {t.id for t in claimed}
        for timer in claimed:
            if timer.id not in failed:
                log.info(
                    "Spawned callback for timer %s", timer.id, extra={"timer_id": str(timer.id)}
                )
        if failed:
            self._release([(t.id, t.attempts) for t in claimed if t.id in failed])
        return len(claimed) - len(failed), bool(failed)

    def _refresh_unclaimed(self, timer_ids: set[uuid.UUID]) -> None:
        # Canceled or claimed elsewhere: gone for good. Postponed, or not yet due by the database's
        # clock: still pending, so it goes back into the cache with its current execute_at.
        try:
            still_pending = self.store.pending_by_ids(timer_ids)
        except Exception:
            log.warning("re-reading %d unclaimed timers failed", len(timer_ids), exc_info=True)
            return
        horizon = self.clock() + timedelta(seconds=self.lookahead)
        self.cache.upsert(t for t in still_pending if t.execute_at <= horizon)

    def _release(self, claims: list[tuple[uuid.UUID, int]]) -> None:
        try:
            released = self.store.release(claims)
            log.warning(
                "released %d timers that could not be enqueued; they will be retried", released
            )
        except Exception:
            # Still claimed: recovery puts them back after the enqueue timeout.
            log.exception("could not release %d unenqueued timers", len(claims))


class CeleryEnqueuer:
    """Sends the callback tasks over one broker connection of its own, kept open between ticks.
    Timers that came due together travel up to `per_task` in one `timers.execute_callbacks`
    message (a lone timer is a batch of one).

    After a refused message the broker counts as down: `ready()` then probes it (at most once per
    call, so once per tick) instead of every tick claiming timers only to release them again.
    """

    def __init__(self, app: Any, per_task: int = CALLBACKS_PER_TASK) -> None:
        self.app = app
        self.per_task = per_task
        self.queue: str = app.conf.task_default_queue
        self._connection: Any = None
        self._down = False

    def ready(self) -> bool:
        if not self._down:
            return True
        try:
            connection = self.app.connection_for_write()
            connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            log.debug("the broker is still unreachable: %s", exc)
            return False
        self._connection = connection
        self._down = False
        log.warning("the broker is reachable again; enqueueing resumes")
        return True

    def enqueue(self, timers: Sequence[Timer]) -> list[uuid.UUID]:
        from timers.tasks import BATCH_TASK_NAME

        for start in range(0, len(timers), self.per_task):
            group = timers[start : start + self.per_task]
            try:
                if self._connection is None:
                    self._connection = self.app.connection_for_write()
                self.app.send_task(
                    BATCH_TASK_NAME,
                    args=[[[str(t.id), t.attempts] for t in group]],
                    connection=self._connection,
                    retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
                )
            except Exception as exc:
                log.warning(
                    "the broker refused the callbacks of %d timers (%s); enqueueing pauses until "
                    "it is back",
                    len(timers) - start,
                    exc,
                )
                self.close()
                self._down = True
                return [t.id for t in timers[start:]]
        return []

    def queue_idle(self) -> bool:
        """Whether no callback message is waiting in the queue (False if the broker can't say)."""
        with self.app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
            channel = connection.channel()
            try:
                _, waiting, _ = channel.queue_declare(queue=self.queue, passive=True)
            except connection.channel_errors:
                return True  # no such queue yet: nothing waits in it
            finally:
                channel.close()
        return int(waiting) == 0

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:
                log.debug("closing the broker connection failed", exc_info=True)
            self._connection = None


class ChangeListener:
    """Keeps the cache right between loads: PostgreSQL notifies every timer that became pending,
    changed while pending, or was canceled (LISTEN/NOTIFY, from the writing transaction), and the
    listener re-reads those rows, updates the cache and wakes the execution loop.

    Notifications can be lost (a dropped connection); the loader's periodic reload stays the safety
    net, and a reconnect triggers a reload at once.
    """

    def __init__(
        self,
        store: TimerStore,
        cache: TimerCache,
        loader: MemoryLoader,
        wake: threading.Event,
    ) -> None:
        self.store = store
        self.cache = cache
        self.loader = loader
        self.wake = wake

    def apply(self, changes: Sequence[Change]) -> None:
        start, end = self.loader.window()
        outside = {c.timer_id for c in changes if c.execute_at > end}
        inside = {c.timer_id for c in changes} - outside
        self.cache.remove(outside)
        if inside:
            pending = [t for t in self.store.pending_by_ids(inside) if start <= t.execute_at <= end]
            self.cache.remove(inside - {t.id for t in pending})
            self.cache.upsert(pending)
        self.wake.set()

    def run(self, stop: threading.Event) -> None:
        feed = self.store.changes()
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    if not feed.is_open:
                        feed.open()
                        self.loader.load()  # whatever changed while we weren't listening
                        self.wake.set()
                        backoff = 0.5
                    changes = feed.wait(0.5)
                    if changes:
                        self.apply(changes)
                except Exception:
                    log.warning(
                        "change listener: %s; reconnecting in %.1fs",
                        "connection lost",
                        backoff,
                        exc_info=True,
                    )
                    feed.close()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            feed.close()


class Scheduler:
    """Runs the loader, the execution loop and (optionally) the change listener on their own
    threads until `stop()`.

    The execution loop ticks on its fixed grid; with wake-ups on, it also wakes at the earliest
    cached `execute_at` and whenever the listener changed the cache.
    """

    def __init__(
        self,
        loader: MemoryLoader,
        execution: ExecutionLoop,
        *,
        load_interval: float,
        execute_interval: float,
        stop: threading.Event | None = None,
        listener: ChangeListener | None = None,
        wake: threading.Event | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loader = loader
        self.execution = execution
        self.listener = listener
        self.load_interval = load_interval
        self.execute_interval = execute_interval
        self._stop = stop or threading.Event()
        self._wake = wake
        self._monotonic = monotonic
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        # The first load happens now, before the first tick, not one load interval later.
        self.loader.load()
        targets: list[tuple[str, Callable[[], None]]] = [
            ("memory-loader", self._run_loader),
            ("execution-loop", self._run_execution),
        ]
        if self.listener is not None:
            listener = self.listener
            targets.append(("change-listener", lambda: listener.run(self._stop)))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run_loader(self) -> None:
        if not self._stop.wait(self.load_interval):
            run_every(self.load_interval, self.loader.load, self._stop)

    def _run_execution(self) -> None:
        if self._wake is None:
            run_every(self.execute_interval, self._safe_tick, self._stop)
            return
        start = self._monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            self._safe_tick()
            deadline = next_deadline(start, self.execute_interval, self._monotonic())
            earliest = self.execution.cache.earliest()
            ticked_at = self.execution.last_tick_at
            # A timer that was due when the tick looked and is still cached could not be claimed
            # (say, the database is down): leave it to the grid instead of spinning on it.
            if earliest is not None and (ticked_at is None or earliest > ticked_at):
                until_due = (earliest - self.execution.clock()).total_seconds()
                deadline = min(deadline, self._monotonic() + max(MIN_WAKE_GAP, until_due))
            self._wake.wait(max(0.0, deadline - self._monotonic()))

    def _safe_tick(self) -> None:
        try:
            self.execution.tick()
        except Exception:
            log.exception("execution loop: tick failed")

    def request_stop(self) -> None:
        """Ask every loop to stop after what it is doing; safe from a signal handler."""
        self._stop.set()
        if self._wake is not None:
            self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every loop; a tick in progress finishes its claim and enqueue first."""
        self.request_stop()
        for thread in self._threads:
            thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stop.wait(timeout)


def build_scheduler(settings: Settings) -> tuple[Scheduler, Callable[[], None]]:
    """A scheduler wired to PostgreSQL and the Celery broker from `settings`, and its cleanup."""
    from timers.celery_app import create_celery_app
    from timers.store import database_engine

    # No ping per checkout: the loops retry on error, and a dropped connection invalidates the pool.
    engine = database_engine(settings.require_database_url(), pool_pre_ping=False)
    store = TimerStore(engine)
    app = create_celery_app(settings)
    cache = TimerCache()
    enqueuer = CeleryEnqueuer(app, per_task=settings.callbacks_per_task)
    recovery = Recovery(
        enqueue_timeout=settings.enqueue_timeout,
        lease=settings.delivery_lease,
        queue_idle=enqueuer.queue_idle,
        misfire_policy=settings.misfire_policy,
        recovery_window=settings.recovery_window,
    )
    loader = MemoryLoader(
        store,
        cache,
        recovery_window=settings.recovery_window,
        lookahead=settings.lookahead,
        fire_overdue=settings.misfire_policy == "fire",
        recovery=recovery,
    )
    stopping = threading.Event()
    execution = ExecutionLoop(
        store,
        cache,
        enqueuer,
        stopping=stopping.is_set,
        lookahead=settings.lookahead,
        batch_size=settings.claim_batch_size,
    )
    wake = threading.Event() if settings.listen else None
    listener = ChangeListener(store, cache, loader, wake) if wake is not None else None
    scheduler = Scheduler(
        loader,
        execution,
        load_interval=settings.load_interval,
        execute_interval=settings.execute_interval,
        stop=stopping,
        listener=listener,
        wake=wake,
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m timers.scheduler",
        description="Run the timers scheduler: load near-term timers into memory and enqueue each "
        "as a Celery task when it is due. Configured by the environment.",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    from timers.config import ConfigError, load_settings
    from timers.logs import configure_logging

    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        problem = check_services(settings)
    except ConfigError as exc:
        print(f"timers scheduler: {exc}", file=sys.stderr)
        return 2
    if problem:
        print(f"timers scheduler: {problem}", file=sys.stderr)
        return 1
    scheduler, close = build_scheduler(settings)

    def on_signal(signum: int, _: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        scheduler.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log.info(
        "scheduler started (mode %s, load every %gs, tick every %gs, lookahead %gs, recovery "
        "window %gs, misfire policy %s)",
        settings.mode,
        settings.load_interval,
        settings.execute_interval,
        settings.lookahead,
        settings.recovery_window,
        settings.misfire_policy,
    )
    scheduler.start()
    while not scheduler.wait(1.0):
        pass
    scheduler.stop()
    close()
    log.info("scheduler stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
