"""The scheduler's part in schedules: after a claim took occurrences, make their schedules' next
slots; on every load, a sweep makes those of every schedule that needs them (after a restart, the
missed slots follow each schedule's `catchup`)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter

from timers.models import Claimed, Claims, utc_now
from timers.storage import SCHEDULES_PER_LOAD, ScheduleSlots, ToppedUp

log = logging.getLogger(__name__)

GATHER = 0.25  # seconds a top-up waits at least, for more claims to join it
DEFER = 10.0  # seconds at most it waits while the next slots of its schedules are made already...
MARGIN = 5.0  # ... and it is made at least this long before the latest slot made comes due


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
        clock: Callable[[], datetime] = utc_now,
        defer: float = DEFER,
    ) -> None:
        self.store = store
        self.lookahead = lookahead
        self.clock = clock
        self.defer = defer
        self.made = Counter(
            "timers_schedule_occurrences_made",
            "Occurrences (timers) made from schedule slots by this scheduler.",
            registry=registry,
        )
        # With `background`, the next slots after a claim are made on a thread of their own: the
        # execution loop goes on to its next claim at once, and claims that come due together are
        # topped up together (at least `GATHER` seconds after the claim), in fewer, larger
        # statements. A claimed occurrence's schedule has its next slot made already (the claim
        # says until when), so its top-up can wait until `MARGIN` seconds before that slot, up to
        # `defer` seconds: the occurrences of a herd (10,000 minute schedules due at :00) are
        # handed over before the 10,000 next slots are made, not while. A top-up lost with its
        # scheduler is made by the next claim of the schedule or by any scheduler's next load.
        self._waiting: dict[uuid.UUID, float] = {}  # schedule -> monotonic time to make its slots
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self.background = background

    def after_claim(self, claimed: Sequence[Claimed]) -> None:
        """Make the next slots of the schedules whose occurrences were just claimed, or skipped
        by the claim (`Claims.skipped_schedules`): at once, or on the keeper's thread."""
        skipped = claimed.skipped_schedules if isinstance(claimed, Claims) else ()
        if not self.background:
            ids = {c.schedule_id for c in claimed if c.schedule_id is not None} | set(skipped)
            if ids:
                self._count(self.store.top_up(sorted(ids), self.lookahead))
            return
        now, today = time.monotonic(), self.clock()
        due: dict[uuid.UUID, float] = dict.fromkeys(skipped, now + GATHER)
        for c in claimed:
            if c.schedule_id is not None:
                at = now + self._wait(c, today)
                due[c.schedule_id] = min(due.get(c.schedule_id, at), at)
        if not due:
            return
        with self._wake:
            for schedule_id, at in due.items():
                self._waiting[schedule_id] = min(self._waiting.get(schedule_id, at), at)
            self._wake.notify()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._top_up_waiting, name="schedule-top-up", daemon=True
                )
                self._thread.start()

    def _wait(self, claimed: Claimed, now: datetime) -> float:
        """How long the top-up after this claimed occurrence may wait (seconds)."""
        if claimed.made_until is None:
            return GATHER
        ahead = (claimed.made_until - now).total_seconds() - MARGIN
        return min(self.defer, max(GATHER, ahead))

    def _top_up_waiting(self) -> None:
        while True:
            with self._wake:
                while (wait := self._until_due()) != 0:
                    self._wake.wait(wait)
                # With those due, those that would be due within GATHER: one statement for both.
                soon = time.monotonic() + GATHER
                ids = sorted(i for i, at in self._waiting.items() if at <= soon)
                for schedule_id in ids:
                    del self._waiting[schedule_id]
                self._busy = True
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

    def _until_due(self) -> float | None:
        """Seconds until the first waiting top-up is due (0: now; None: none is waiting)."""
        if not self._waiting:
            return None
        return max(0.0, min(self._waiting.values()) - time.monotonic())

    def idle(self) -> bool:
        """Whether no top-up is waiting (tests wait on it)."""
        with self._wake:
            return not self._waiting and not self._busy

    def sweep(self, due: Sequence[uuid.UUID]) -> None:
        """Make the next slots of the schedules a load found due for them; when it found as many
        as a load reports, go on with every other schedule that needs them, 1,000 a statement,
        until none is left (after a restart with many schedules). A schedule whose top-up waits
        on the keeper's thread is left to it: its next slot is made already, and a load in the
        seconds after a herd's claim would otherwise make the herd's next slots in them."""
        with self._wake:
            due = [schedule_id for schedule_id in due if schedule_id not in self._waiting]
        if not due:
            return
        done = self.store.top_up(due, self.lookahead)
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
