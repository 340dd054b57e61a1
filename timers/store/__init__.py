"""The PostgreSQL store: every query and transaction on the `timers` table. Nothing else in the
package writes SQL.

One module per caller's seam, all sharing one engine (`connection.Connected`):

- `repository`: create, read, change, cancel, redrive (the API and the Python API);
- `listing`: filters, pages and their totals (`totals`), bulk cancel;
- `lifecycle`: the statements of a timer's life after its creation, run by `scheduling` (load,
  claim, release, recover, fail what was missed) and `delivery` (start, renew, finish);
- `retention`: counts, backlog, lateness, purge; `notifications`: the change feed;
- `schedules`: recurring schedules and the occurrences they make (a store's `schedules`);
- `sql/queries.sql`: the SQL written as text, loaded by name.

Each public method is one transaction: a method that runs a single statement runs it in autocommit
(a statement is atomic on its own), one that runs several wraps them in BEGIN/COMMIT. Docstrings say
exactly which rows a statement touches. Times that several hosts compare (is a timer due?) come
from the database's `now()`.
"""

from __future__ import annotations

from functools import cached_property

from timers.storage import (
    NearTerm,
    NewTimer,
    StoreError,
    StoreUnavailable,
    TimerNotFound,
    TimerNotPending,
)
from timers.store.connection import (
    database_engine,
    database_errors,
    describe_database_error,
    load_json,
)
from timers.store.delivery import DeliveryStatements
from timers.store.lifecycle import near_term_query
from timers.store.listing import ListingStatements, label_of
from timers.store.notifications import NotificationFeed
from timers.store.repository import TimerStatements
from timers.store.retention import RetentionStatements
from timers.store.schedules import ScheduleStatements
from timers.store.scheduling import SchedulerStatements

__all__ = [
    "NearTerm",
    "NewTimer",
    "NotificationFeed",
    "ScheduleStatements",
    "StoreError",
    "StoreUnavailable",
    "TimerNotFound",
    "TimerNotPending",
    "TimerStore",
    "database_engine",
    "database_errors",
    "describe_database_error",
    "label_of",
    "load_json",
    "near_term_query",
]


class TimerStore(
    TimerStatements,
    ListingStatements,
    SchedulerStatements,
    DeliveryStatements,
    RetentionStatements,
):
    """The `Store` protocol on PostgreSQL: every role, on one engine."""

    @cached_property
    def schedules(self) -> ScheduleStatements:
        """The schedules, on the same engine."""
        return ScheduleStatements(self.engine)
