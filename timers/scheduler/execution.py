"""The execution loop's tick: claim the cached timers that are due, enqueue the claimed ones."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from timers.config import CLAIM_BATCH
from timers.metrics import SchedulerMetrics
from timers.models import Claimed, Claims, utc_now
from timers.scheduler.cache import TimerCache
from timers.scheduler.timing import Clock
from timers.storage import SchedulerStore

log = logging.getLogger(__name__)


class Enqueuer(Protocol):
    def ready(self) -> bool:
        """Whether the broker can take messages now (after a refused enqueue, it is probed)."""
        ...

    def enqueue(self, timers: Sequence[Claimed]) -> list[uuid.UUID]:
        """Send the callback tasks of these claimed timers; return the ids that could not be sent (all
        from the first refused message on)."""
        ...


class ExecutionLoop:
    def __init__(
        self,
        store: SchedulerStore,
        cache: TimerCache,
        enqueuer: Enqueuer,
        *,
        clock: Clock = utc_now,
        batch_size: int = CLAIM_BATCH,
        stopping: Callable[[], bool] = lambda: False,
        lookahead: float = 60.0,
        metrics: SchedulerMetrics | None = None,
        after_claim: Callable[[list[Claimed]], None] | None = None,
    ) -> None:
        self.metrics = metrics or SchedulerMetrics()
        # Told of each claim's timers once they are enqueued (schedules make their next slots).
        self.after_claim = after_claim
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
        # The schedules among them have their next slots made once the tick's last batch is
        # enqueued: a herd (10,000 schedules due at :00) is claimed at the claim's pace, and each
        # schedule has its next slot made already, so a top-up a moment later changes no firing.
        claims = Claims()
        try:
            for start in range(0, len(due), self.batch_size):
                if start and self.stopping():
                    break
                sent, refused = self._fire(
                    [t.id for t in due[start : start + self.batch_size]], claims
                )
                enqueued += sent
                if refused:
                    break
        finally:
            self._after_claim(claims)
        return enqueued

    def _fire(self, ids: list[uuid.UUID], claims: Claims) -> tuple[int, bool]:
        """Claim and enqueue these timers: how many were enqueued, and whether the broker refused.
        What the claim took (and the schedules it skipped) is added to `claims`."""
        began = time.monotonic()
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
        self.metrics.claim_duration.observe(time.monotonic() - began)
        self.cache.remove(ids)
        claims.add(claimed)
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
        self.metrics.enqueued.inc(len(claimed) - len(failed))
        if failed:
            self._release([(t.id, t.claim) for t in claimed if t.id in failed])
        return len(claimed) - len(failed), bool(failed)

    def _after_claim(self, claimed: Claims) -> None:
        # Also when every due occurrence was skipped: `claimed` then names their schedules.
        if self.after_claim is None or not (claimed or claimed.skipped_schedules):
            return
        try:
            self.after_claim(claimed)
        except Exception:
            log.warning("after a claim: making the next schedule slots failed", exc_info=True)

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
