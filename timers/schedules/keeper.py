"""The scheduler's part in schedules: after a claim took occurrences, make their schedules' next
slots; on every load, a sweep makes those of every schedule that needs them (after a restart, the
missed slots follow each schedule's `catchup`)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter

from timers.models import Claimed, Claims
from timers.schedules.store import ScheduleStore, ToppedUp
from timers.store.lifecycle import SCHEDULES_PER_LOAD

log = logging.getLogger(__name__)


class ScheduleKeeper:
    """Keeps every live schedule's next slots made as pending occurrences. Any number of
    schedulers may run one: occurrences are unique per (schedule, slot) in the database."""

    def __init__(
        self,
        store: ScheduleStore,
        *,
        lookahead: float = 60.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = store
        self.lookahead = lookahead
        self.made = Counter(
            "timers_schedule_occurrences_made",
            "Occurrences (timers) made from schedule slots by this scheduler.",
            registry=registry,
        )

    def after_claim(self, claimed: Sequence[Claimed]) -> None:
        """Make the next slots of the schedules whose occurrences were just claimed, or skipped
        by the claim (`Claims.skipped_schedules`)."""
        skipped = claimed.skipped_schedules if isinstance(claimed, Claims) else ()
        ids = sorted({c.schedule_id for c in claimed if c.schedule_id is not None} | set(skipped))
        if ids:
            self._count(self.store.top_up(ids, self.lookahead))

    def sweep(self, due: Sequence[uuid.UUID]) -> None:
        """Make the next slots of the schedules a load found due for them; when it found as many
        as a load reports, go on with every other schedule that needs them, 1,000 a statement,
        until none is left (after a restart with many schedules)."""
        done = self.store.top_up(list(due), self.lookahead)
        self._count(done)
        while len(due) >= SCHEDULES_PER_LOAD and done.made:
            done = self.store.top_up(None, self.lookahead)
            self._count(done)
            if done.schedules < SCHEDULES_PER_LOAD:
                return

    def _count(self, done: ToppedUp) -> None:
        # Skipped slots are counted on their schedules (`timers_schedule_slots_skipped`).
        self.made.inc(done.made)
        if done.made or done.skipped:
            log.info(
                "schedules: made %d occurrences, skipped %d missed slots",
                done.made,
                done.skipped,
            )
