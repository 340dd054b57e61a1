"""The change listener: keeps the cache right between loads from PostgreSQL's notifications."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from timers.models import DueTime
from timers.scheduler.cache import TimerCache
from timers.scheduler.loader import MemoryLoader
from timers.storage import Change, SchedulerStore

log = logging.getLogger(__name__)


class ChangeListener:
    """Keeps the cache right between loads: PostgreSQL notifies every timer that became pending,
    changed while pending, or was canceled (LISTEN/NOTIFY, from the writing transaction), and the
    listener updates the cache from what each notification says (which timer, when it is due,
    pending or canceled) and wakes the execution loop. A stale entry costs nothing but a failed
    claim: a claim takes only timers that are still pending and due.

    Notifications can be lost (a dropped connection); the loader's periodic reload stays the safety
    net, and a reconnect triggers a reload at once.
    """

    def __init__(
        self,
        store: SchedulerStore,
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
        latest = {c.timer_id: c for c in changes}  # in commit order: the last one is current
        told = [c for c in latest.values() if c.pending is not None]
        self.cache.remove(
            c.timer_id for c in told if not (c.pending and start <= c.execute_at <= end)
        )
        self.cache.upsert(
            DueTime(c.timer_id, c.execute_at)
            for c in told
            if c.pending and start <= c.execute_at <= end
        )
        # Notifications that do not say the status (written before migration 0007): re-read.
        unknown = {c.timer_id for c in latest.values() if c.pending is None}
        if unknown:
            pending = [
                t for t in self.store.pending_by_ids(unknown) if start <= t.execute_at <= end
            ]
            self.cache.remove(unknown - {t.id for t in pending})
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
