"""The twin of PostgreSQL's LISTEN/NOTIFY change feed."""

from __future__ import annotations

import threading
from typing import Protocol

from timers.storage import Change, StoreUnavailable


class _Database(Protocol):
    unavailable: bool  # set while the database can't be reached


class InMemoryFeed:
    """The twin of PostgreSQL's LISTEN/NOTIFY feed: changes made while it is open."""

    def __init__(self, store: _Database) -> None:
        self.store = store
        self._changes: list[Change] = []
        self._arrived = threading.Condition()
        self._open = False

    def notify(self, change: Change) -> None:
        with self._arrived:
            if self._open:
                self._changes.append(change)
                self._arrived.notify_all()

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        if self.store.unavailable:
            raise StoreUnavailable("the database is unavailable (in-memory store)")
        with self._arrived:
            self._open = True
            self._changes.clear()

    def wait(self, timeout: float) -> list[Change]:
        with self._arrived:
            if not self._open:
                raise StoreUnavailable("change feed lost (in-memory store)")
            if not self._changes:
                self._arrived.wait(timeout)
            changes, self._changes = self._changes, []
            return changes

    def close(self) -> None:
        with self._arrived:
            self._open = False
            self._changes.clear()
