"""Retention: finished timers older than `TIMERS_RETENTION` are deleted in small batches."""

from __future__ import annotations

import logging
import threading
import time

from timers.metrics import SchedulerMetrics
from timers.storage import Housekeeping, PurgePosition

log = logging.getLogger(__name__)

PURGE_BATCH = 500  # rows per DELETE: short locks, small WAL bursts
REST_FACTOR = 9.0  # rest this many times as long as a batch took: a tenth of one connection
PURGE_EVERY = 600.0  # seconds between passes once nothing is left to delete
FIRST_PASS_AFTER = 10.0  # seconds after start


class Retention:
    """Deletes completed, failed and canceled timers that finished more than `keep` seconds ago.

    A pass walks the finished timers once, a batch of PURGE_BATCH rows at a time, each batch
    starting where the previous one ended (so the pass never rescans what it deleted), resting
    after each REST_FACTOR times as long as it took (so the purge takes at most a tenth of one database
    connection's time: deleting millions of rows at full speed saturated PostgreSQL's writes and
    made every timer due meanwhile late); then it sleeps PURGE_EVERY. Several schedulers
    may run it: an advisory lock lets one purge at a time, and the others skip their pass. An
    idle system costs one statement per pass. A pass cut short by an error (a lock timeout, the
    database gone) goes on from its last position at the next try, instead of walking again the
    index entries of every row it had deleted.
    """

    def __init__(
        self,
        store: Housekeeping,
        keep: float,
        *,
        batch: int = PURGE_BATCH,
        every: float = PURGE_EVERY,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self.store = store
        self.keep = keep
        self.batch = batch
        self.every = every
        self.metrics = metrics or SchedulerMetrics()
        self.position: PurgePosition | None = None  # where the pass under way goes on

    def purge(self, stop: threading.Event) -> int:
        """One pass (or the rest of one an error cut short); how many timers it deleted."""
        deleted = 0
        while not stop.is_set():
            began = time.monotonic()
            batch = self.store.purge_finished(self.keep, self.batch, self.position)
            if batch is None:
                log.debug("retention: another scheduler is purging")
                break
            deleted += batch.deleted
            self.metrics.purged.inc(batch.deleted)
            self.position = batch.next
            if batch.next is None:
                if deleted:
                    log.info(
                        "retention: deleted %d finished timers older than %gs", deleted, self.keep
                    )
                return deleted
            stop.wait(max((time.monotonic() - began) * REST_FACTOR, 0.05))
        if deleted:
            log.info("retention: stopped after deleting %d finished timers", deleted)
        return deleted

    def run(self, stop: threading.Event, first_after: float = FIRST_PASS_AFTER) -> None:
        wait = first_after
        while not stop.wait(wait):
            try:
                self.purge(stop)
                wait = self.every
            except Exception as exc:
                log.warning("retention: purging failed (%s); going on from there in 60s", exc)
                wait = 60.0
