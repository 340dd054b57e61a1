"""`Scheduler`: runs the loader, the execution loop and the change listener on their own threads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from timers.scheduler.execution import ExecutionLoop
from timers.scheduler.listener import ChangeListener
from timers.scheduler.loader import MemoryLoader
from timers.scheduler.retention import Retention
from timers.scheduler.timing import next_wake, run_every

log = logging.getLogger(__name__)


class Scheduler:
    """Runs the loader, the execution loop and (optionally) the change listener and retention on
    their own threads until `stop()`.

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
        retention: Retention | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retention = retention
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
        if self.retention is not None:
            retention = self.retention
            targets.append(("retention", lambda: retention.run(self._stop)))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run_loader(self) -> None:
        if not self._stop.wait(self.load_interval):
            run_every(self.load_interval, self.loader.load, self._stop)

    def _run_execution(self) -> None:
        start = self._monotonic()
        woken = self._wake or self._stop
        while not self._stop.is_set():
            woken.clear() if woken is self._wake else None
            self._safe_tick()
            woken.wait(
                next_wake(
                    grid_start=start,
                    interval=self.execute_interval,
                    now=self._monotonic(),
                    wall_now=self.execution.clock(),
                    earliest=self.execution.cache.earliest(),
                    last_tick_at=self.execution.last_tick_at,
                    wake_ups=self._wake is not None,
                )
            )

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
