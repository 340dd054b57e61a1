"""The scheduler's in-memory cache of near-term timers."""

from __future__ import annotations

import heapq
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime

from timers.models import DueTime, Timer

# The cache holds what the loader reads (DueTime) or full timers (from notifications and claims).
Cached = DueTime | Timer


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
