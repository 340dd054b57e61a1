"""The workers' statements on the PostgreSQL store (`DeliveryStore`): a claim's delivery starts
under a lease, the lease is renewed while it runs, and its outcome is recorded."""

from __future__ import annotations

import json
from collections.abc import Sequence

from timers.models import Timer
from timers.storage import Claim, Outcome, clip_error
from timers.store.connection import Connected
from timers.store.lifecycle import BEGIN, FINISH, RENEW, claims_params


class DeliveryStatements(Connected):
    def begin_deliveries(self, claims: Sequence[Claim], lease: float) -> list[Timer]:
        """Start the deliveries of the (id, claim number) claims that are `executing` under that claim
        and not started yet: stamp `started_at` and a lease until now + `lease` seconds, in one
        statement. Returns the timers the caller now delivers; a claim already started (a
        redelivered copy of its message), finished, canceled or claimed again is left alone."""
        if not claims:
            return []
        with self._statement() as conn:
            result = conn.execute(BEGIN, {**claims_params(claims), "lease": lease})
            keys = tuple(result.keys())
            rows = result.all()
        # Plain dicts: SQLAlchemy's row mappings answer a missing key (the columns FOR_DELIVERY
        # leaves out) through an exception, twice a timer.
        return [Timer.from_row(dict(zip(keys, row, strict=True))) for row in rows]

    def renew_leases(self, claims: Sequence[Claim], lease: float) -> int:
        """Extend to now + `lease` seconds the leases of the (id, claim number) claims still `executing`
        under that claim; returns how many were renewed."""
        if not claims:
            return 0
        with self._statement() as conn:
            return int(conn.execute(RENEW, {**claims_params(claims), "lease": lease}).rowcount)

    def finish_many(self, outcomes: Sequence[Outcome]) -> int:
        """Record the outcomes of delivery attempts in one statement: `completed` when the error
        is None, `failed` with `last_error`, or, for a retry, back to `pending` due `retry_in`
        seconds from now (claim, start and lease cleared, so it is claimed afresh); `executed_at`
        set, one more delivery attempt counted, and the attempt appended to the history (the last
        HISTORY_LENGTH kept). Touches only rows still `executing` under that claim; returns how
        many it recorded (a row recovered and claimed again since is left alone)."""
        if not outcomes:
            return 0
        params = {
            "outcome_id": [o.timer_id for o in outcomes],
            "outcome_claim": [o.claim for o in outcomes],
            "outcome_status": [o.status.value for o in outcomes],
            "outcome_error": [clip_error(o.error) for o in outcomes],
            "outcome_retry_in": [o.retry_in for o in outcomes],
            "outcome_entry": [
                json.dumps([dict(o.entry)] if o.entry is not None else []) for o in outcomes
            ],
        }
        with self._statement() as conn:
            return int(conn.execute(FINISH, params).rowcount)
