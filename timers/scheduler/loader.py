"""The memory loader: every load period, the near-term pending timers replace the whole cache, and
the same statement recovers stranded timers."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from timers.metrics import SchedulerMetrics
from timers.models import utc_now
from timers.scheduler.cache import TimerCache
from timers.scheduler.recovery import Recovery
from timers.scheduler.timing import Clock, near_term_window
from timers.storage import SchedulerStore

log = logging.getLogger(__name__)


class MemoryLoader:
    """Replaces the cache with the near-term pending timers, and in the same statement recovers
    stranded ones (see `RecoveryRules`): a worker that died costs at most a lease plus a load
    period, and an idle scheduler costs PostgreSQL one statement per load."""

    def __init__(
        self,
        store: SchedulerStore,
        cache: TimerCache,
        *,
        recovery_window: float,
        lookahead: float,
        clock: Clock = utc_now,
        fire_overdue: bool = False,
        recovery: Recovery | None = None,
        metrics: SchedulerMetrics | None = None,
        top_up: Callable[[list[uuid.UUID]], None] | None = None,
    ) -> None:
        self.metrics = metrics or SchedulerMetrics()
        # Given the schedules a load found due for their next slots, makes those occurrences
        # (the load's one statement finds them: an idle scheduler sends nothing more).
        self.top_up = top_up
        self.fire_overdue = fire_overdue
        self.store = store
        self.cache = cache
        self.recovery_window = recovery_window
        self.lookahead = lookahead
        self.clock = clock
        self.recovery = recovery
        # The periodic load and a listener's reload after a reconnect share the cache's snapshot.
        self._loading = threading.Lock()

    def window(self) -> tuple[datetime, datetime]:
        return near_term_window(self.clock(), self.recovery_window, self.lookahead)

    def load(self) -> int | None:
        """Replace the cache with the near-term pending timers; None if the database failed."""
        with self._loading:
            return self._load()

    def _load(self) -> int | None:
        rules = None
        if self.recovery is not None:
            self.recovery.fail_missed(self.store)
            rules = self.recovery.rules()
        start, end = self.window()
        self.cache.begin_snapshot()
        began = time.monotonic()
        try:
            # Under the `fire` misfire policy, timers overdue beyond the recovery window are
            # loaded too (oldest first) and fire late; under `skip`, they were failed just now.
            near = self.store.load_near_term(
                None if self.fire_overdue else start,
                end,
                recovery=rules,
                schedules_within=None if self.top_up is None else self.lookahead,
            )
        except Exception:
            self.cache.abandon_snapshot()
            log.warning(
                "memory loader: loading near-term timers failed; retrying next period",
                exc_info=True,
            )
            return None
        self.metrics.load_duration.observe(time.monotonic() - began)
        self.metrics.recovered.inc(len(near.recovered))
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
        if near.schedules and self.top_up is not None:
            # After the load: the occurrences it makes reach the cache by their notifications
            # (or the next load), and a failure here leaves the cache loaded.
            try:
                self.top_up(near.schedules)
            except Exception:
                log.warning("memory loader: making schedules' next slots failed", exc_info=True)
        return len(near.timers)
