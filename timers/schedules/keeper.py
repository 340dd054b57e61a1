"""The scheduler's part in schedules: after a claim took occurrences, make their schedules' next
slots; on every load, a sweep makes those of every schedule that needs them (after a restart, the
missed slots follow each schedule's `catchup`)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter

from timers.models import Claimed, Claims
from timers.storage import SCHEDULES_PER_LOAD, ScheduleSlots, ToppedUp

log = logging.getLogger(__name__)

GATHER = 0.25  # seconds the background top-up waits for more claims to join it


class ScheduleKeeper:
    """Keeps every live schedule's next slots made as pending occurrences. Any number of
    schedulers may run one: occurrences are unique per (schedule, slot) in the database."""

    def __init__(
        self,
        store: ScheduleSlots,
        *,
        lookahead: float = 60.0,
        registry: CollectorRegistry | None = None,
        background: bool = False,
    ) -> None:
        self.store = store
        self.lookahead = lookahead
        self.made = Counter(
            "timers_schedule_occurrences_made",
            "Occurrences (timers) made from schedule slots by this scheduler.",
            registry=registry,
        )
        # With `background`, the next slots after a claim are made on a thread of their own, in
        # one top-up for what the claims of `GATHER` seconds took: the execution loop goes on to
        # its next claim at once, a jittered herd (a few occurrences per tick) is topped up in
        # fewer, larger statements, and the next slots are made ahead anyway (the following slot
        # exists already, even for a 1-second schedule), so a top-up a moment later changes no
        # firing time.
        self._waiting: set[uuid.UUID] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self.background = background

    def after_claim(self, claimed: Sequence[Claimed]) -> None:
        """Make the next slots of the schedules whose occurrences were just claimed, or skipped
        by the claim (`Claims.skipped_schedules`): at once, or on the keeper's thread."""
        skipped = claimed.skipped_schedules if isinstance(claimed, Claims) else ()
        ids = {c.schedule_id for c in claimed if c.schedule_id is not None} | set(skipped)
        if not ids:
            return
        if not self.background:
            self._count(self.store.top_up(sorted(ids), self.lookahead))
            return
        with self._wake:
            self._waiting |= ids
            self._wake.notify()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._top_up_waiting, name="schedule-top-up", daemon=True
                )
                self._thread.start()

    def _top_up_waiting(self) -> None:
        while True:
            with self._wake:
                while not self._waiting:
                    self._wake.wait()
            time.sleep(GATHER)
            with self._wake:
                ids, self._waiting, self._busy = sorted(self._waiting), set(), True
            try:
                for start in range(0, len(ids), SCHEDULES_PER_LOAD):
                    chunk = ids[start : start + SCHEDULES_PER_LOAD]
                    self._count(self.store.top_up(chunk, self.lookahead))
            except Exception:
                # Their next slots are made ahead: the next load's sweep makes these.
                log.warning("schedules: making next slots failed", exc_info=True)
            finally:
                with self._wake:
                    self._busy = False

    def idle(self) -> bool:
        """Whether no top-up is waiting (tests wait on it)."""
        with self._wake:
            return not self._waiting and not self._busy

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
