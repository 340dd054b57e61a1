"""The change listener: keeps the cache right between loads from PostgreSQL's notifications."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from timers.scheduler.cache import TimerCache
from timers.scheduler.loader import MemoryLoader
from timers.storage import Change, Store

log = logging.getLogger(__name__)


class ChangeListener:
    """Keeps the cache right between loads: PostgreSQL notifies every timer that became pending,
    changed while pending, or was canceled (LISTEN/NOTIFY, from the writing transaction), and the
    listener re-reads those rows, updates the cache and wakes the execution loop.

    Notifications can be lost (a dropped connection); the loader's periodic reload stays the safety
    net, and a reconnect triggers a reload at once.
    """

    def __init__(
        self,
        store: Store,
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
