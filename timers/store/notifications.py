"""The change feed of the PostgreSQL store: `LISTEN timers_changed` (`SchedulerStore.changes`)."""

from __future__ import annotations

import logging
import select as io_select
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg2
from sqlalchemy import Engine, text

from timers.models import TimerStatus
from timers.storage import Change, StoreUnavailable
from timers.store.connection import database_errors, describe_database_error
from timers.store.sql import queries

log = logging.getLogger(__name__)

CHANGES_CHANNEL = "timers_changed"  # the channel `queries["listen"]` listens on


class NotificationFeed:
    """`LISTEN timers_changed` on a connection of its own (filled by the migrations' trigger).

    Notifications are a hint, not the truth: each says which timer, when it is due and whether it
    is pending or canceled (0007; a reader re-reads the rows of older two-part ones), and after a
    lost connection a reader reloads everything, since notifications sent meanwhile are gone.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = None

    def open(self) -> None:
        self.close()
        with database_errors():
            connection = self.engine.connect()
            connection.execute(text(queries["listen"]))
        self._connection = connection

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    def wait(self, timeout: float) -> list[Change]:
        """The changes that arrive within `timeout` seconds (empty if none); raises when the
        connection is lost."""
        dbapi = self._connection.connection.driver_connection
        try:
            if not dbapi.notifies:
                ready, _, _ = io_select.select([dbapi], [], [], timeout)
                if ready:
                    dbapi.poll()
            else:
                dbapi.poll()
        except (OSError, psycopg2.Error) as exc:
            raise StoreUnavailable(f"change feed lost: {describe_database_error(exc)}") from exc
        changes = []
        while dbapi.notifies:
            note = dbapi.notifies.pop(0)
            try:
                raw_id, epoch, *status = note.payload.split(" ")
                at = datetime.fromtimestamp(float(epoch), tz=UTC)
                pending = status[0] == TimerStatus.PENDING.value if status else None
                changes.append(Change(uuid.UUID(raw_id), at, pending))
            except ValueError:
                log.warning("ignoring malformed change notification %r", note.payload)
        return changes

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                log.debug("closing the change feed connection failed", exc_info=True)
            self._connection = None
