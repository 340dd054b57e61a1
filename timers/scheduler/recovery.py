"""Recovery of stranded timers (lost claims, lapsed delivery leases) and the `skip` misfire policy;
run by the memory loader, inside its own statement."""

from __future__ import annotations

import logging
from collections.abc import Callable

from timers.storage import RecoveryRules, SchedulerStore

log = logging.getLogger(__name__)


class Recovery:
    """What the loader needs to recover stranded timers: the timeouts, and a look at the broker
    (is the callback queue idle?) so that messages merely waiting in a long queue are not taken
    for lost."""

    def __init__(
        self,
        *,
        enqueue_timeout: float,
        lease: float,
        queue_idle: Callable[[], bool],
        misfire_policy: str = "fire",
        recovery_window: float = 300.0,
    ) -> None:
        self.enqueue_timeout = enqueue_timeout
        self.lease = lease
        self.queue_idle = queue_idle
        self.misfire_policy = misfire_policy
        self.recovery_window = recovery_window

    def rules(self) -> RecoveryRules:
        try:
            idle = self.queue_idle()
        except Exception:
            log.debug("could not look at the callback queue", exc_info=True)
            idle = False
        return RecoveryRules(self.enqueue_timeout, self.lease, idle)

    def fail_missed(self, store: SchedulerStore) -> None:
        """Under the `skip` misfire policy, fail the timers overdue beyond the recovery window."""
        if self.misfire_policy != "skip":
            return
        try:
            missed = store.fail_missed(self.recovery_window)
        except Exception:
            log.warning("marking missed timers failed; retrying next period", exc_info=True)
            return
        if missed:
            log.warning("Marked %d timers failed as missed (misfire policy skip)", missed)
