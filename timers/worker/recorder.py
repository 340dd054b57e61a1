"""Writing down what the delivery engine did, on a thread of its own in each worker process.

- Outcomes are recorded as deliveries finish: the thread writes whatever has finished since its
  last write in one statement, so under load many outcomes share a statement, and when idle each
  is written within milliseconds.
- The leases of deliveries still running, and of outcomes not yet written, are renewed every third
  of a lease: while this process lives its deliveries are never taken over, however slow the
  receiver; when it dies they lapse within one lease and recovery fires them again.
- A delivered callback is never sent again because the database was away: an outcome that can't
  be written stays queued and is retried for as long as it takes (recovery gives workers one lease
  after the database comes back before it takes anything over).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from timers.storage import Claim, Outcome, Store
from timers.worker.outcomes import Outcomes

log = logging.getLogger(__name__)

BATCH = 1000
RETRY_FIRST, RETRY_MAX = 0.2, 5.0


class OutcomeRecorder:
    """Writes down the outcomes left in `outcomes` and renews the leases of the claims `running`
    returns (the deliveries still in flight) and of the outcomes not yet written."""

    def __init__(
        self,
        store: Store,
        outcomes: Outcomes,
        *,
        lease: float,
        running: Callable[[], list[Claim]],
    ) -> None:
        self.store = store
        self.outcomes = outcomes
        self.lease = lease
        self.running = running
        self._unwritten: list[Outcome] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outcome-recorder", daemon=True)
        self._thread.start()

    def close(self, timeout: float) -> list[Outcome]:
        """Write what is queued (for up to `timeout` seconds) and stop; returns the outcomes that
        could not be written."""
        self._closing.set()
        self.outcomes.interrupt()
        self._thread.join(timeout)
        return list(self._unwritten)

    def _run(self) -> None:
        renew_every = self.lease / 3
        next_renewal = time.monotonic() + renew_every
        retry_in = RETRY_FIRST
        while True:
            if not self._unwritten:
                closing = self._closing.is_set()
                wait = 0.0 if closing else max(0.0, next_renewal - time.monotonic())
                if not self._take(wait) and closing:
                    return
            while len(self._unwritten) < BATCH and self._take(0.0):
                pass
            if self._unwritten:
                if self._write():
                    retry_in = RETRY_FIRST
                else:
                    time.sleep(retry_in)
                    retry_in = min(retry_in * 2, RETRY_MAX)
            if time.monotonic() >= next_renewal:
                self._renew()
                next_renewal = time.monotonic() + renew_every

    def _take(self, wait: float) -> bool:
        """Move one queued outcome to the unwritten list; False if none came (or closing)."""
        item = self.outcomes.get(wait)
        if item is None:
            return False
        self._unwritten.append(item)
        return True

    def _write(self) -> bool:
        batch = self._unwritten[:BATCH]
        try:
            recorded = self.store.finish_many(batch)
        except Exception as exc:
            log.warning(
                "recording %d outcomes failed (%s); they stay queued and are retried",
                len(batch),
                _one_line(exc),
            )
            return False
        del self._unwritten[: len(batch)]
        if recorded < len(batch):
            log.warning(
                "%d of %d outcomes were not recorded: their timers were recovered and claimed "
                "again since (this worker could not renew their leases)",
                len(batch) - recorded,
                len(batch),
            )
        for o in batch:
            context = {"timer_id": str(o.timer_id)}
            if o.error is None:
                log.debug(
                    "timer %s completed (%.0f ms after due)", o.timer_id, o.late_ms, extra=context
                )
            elif o.retry_in is not None:
                log.info(
                    "timer %s: %s; trying again in %.1fs",
                    o.timer_id,
                    o.error,
                    o.retry_in,
                    extra=context,
                )
            else:
                log.info("timer %s failed: %s", o.timer_id, o.error, extra=context)
        return True

    def _renew(self) -> None:
        claims = dict(self.running())
        claims.update((o.timer_id, o.claim) for o in self._unwritten)
        if not claims:
            return
        try:
            self.store.renew_leases(list(claims.items()), self.lease)
        except Exception as exc:
            log.warning("renewing %d delivery leases failed (%s)", len(claims), _one_line(exc))


def _one_line(exc: BaseException) -> str:
    reason = getattr(exc, "orig", None) or exc
    return " ".join(str(reason).split()) or type(reason).__name__
