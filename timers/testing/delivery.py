"""The twin of `timers.store.delivery`: deliveries started under a lease, renewed, finished."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from timers.models import Timer
from timers.storage import HISTORY_LENGTH, Claim, Outcome, clip_error
from timers.testing.table import TimerTable


def for_delivery(timer: Timer) -> Timer:
    """A claimed or started timer as the store returns it: without metadata and history."""
    return replace(timer, metadata=None, history=())


class InMemoryDelivery(TimerTable):
    def begin_deliveries(self, claims: Sequence[Claim], lease: float) -> list[Timer]:
        with self._operation() as now:
            until = now + timedelta(seconds=lease)
            return [
                for_delivery(self._update(timer, now, started_at=now, leased_until=until))
                for timer in self._under_claim(claims, unstarted=True)
            ]

    def renew_leases(self, claims: Sequence[Claim], lease: float) -> int:
        with self._operation() as now:
            until = now + timedelta(seconds=lease)
            renewed = self._under_claim(claims)
            for timer in renewed:
                self._update(timer, now, leased_until=until)
            return len(renewed)

    def finish_many(self, outcomes: Sequence[Outcome]) -> int:
        with self._operation() as now:
            by_claim = {(o.timer_id, o.claim): o for o in outcomes}
            finished = self._under_claim(list(by_claim))
            for timer in finished:
                outcome = by_claim[(timer.id, timer.claims)]
                history = list(timer.history)
                if outcome.entry is not None:
                    history = [*history, dict(outcome.entry)][-HISTORY_LENGTH:]
                changes: dict[str, Any] = {
                    "status": outcome.status,
                    "last_error": clip_error(outcome.error),
                    "executed_at": now,
                    "leased_until": None,
                    "delivery_attempts": timer.delivery_attempts + 1,
                    "history": tuple(history),
                }
                if outcome.retry_in is not None:
                    changes.update(
                        execute_at=now + timedelta(seconds=outcome.retry_in),
                        claimed_at=None,
                        started_at=None,
                    )
                self._update(timer, now, **changes)
            return len(finished)
