"""The statements of a timer's life cycle after its creation, the scheduler's and the workers':
load, claim, release, begin, renew, finish, recover, fail what was missed. Named module-level
data, built once: building one costs more CPU than PostgreSQL spends running it (their values
are bound when they run). `scheduling` and `delivery` run them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Text,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from timers.models import TimerStatus
from timers.schema import schedules, timers
from timers.storage import (
    HISTORY_LENGTH,
    LOST_CLAIM,
    LOST_DELIVERY,
    SCHEDULES_PER_LOAD,
    Claim,
    RecoveryRules,
)
from timers.store.connection import interval, seconds, unnest
from timers.store.sql import queries

PENDING = TimerStatus.PENDING.value
EXECUTING = TimerStatus.EXECUTING.value


def near_term_query(start: datetime | None, end: datetime, limit: int) -> Any:
    """The loader's query (see `TimerStore.load_near_term`)."""
    conditions = [timers.c.status == PENDING, timers.c.execute_at <= end]
    if start is not None:
        conditions.append(timers.c.execute_at >= start)
    return (
        select(timers.c.id, timers.c.execute_at)
        .where(*conditions)
        .order_by(timers.c.execute_at)
        .limit(limit)
    )


def recover_statement(recovery: RecoveryRules) -> Any:
    """The UPDATE that puts stranded `executing` timers back to `pending` (see RecoveryRules)."""
    lease_end = func.coalesce(timers.c.leased_until, timers.c.started_at + seconds(recovery.lease))
    # A database that was down stopped every worker from renewing: after it comes back, give the
    # workers that are alive one lease to renew (or record) before taking their deliveries over.
    database_up_long_enough = func.pg_postmaster_start_time() < func.now() - seconds(recovery.lease)
    lapsed = timers.c.started_at.is_not(None) & (lease_end < func.now()) & database_up_long_enough
    stranded = lapsed
    if recovery.queue_idle:
        lost = timers.c.started_at.is_(None) & (
            timers.c.claimed_at < func.now() - seconds(recovery.enqueue_timeout)
        )
        stranded = lapsed | lost
    reason = case((timers.c.started_at.is_(None), LOST_CLAIM), else_=LOST_DELIVERY)
    return (
        timers.update()
        .where(timers.c.status == EXECUTING, stranded)
        .values(
            status=PENDING,
            claimed_at=None,
            started_at=None,
            leased_until=None,
            last_error=reason,
        )
    )


def fail_missed_statement(recovery_window: float) -> Any:
    """The UPDATE that fails the `pending` timers due more than `recovery_window` seconds ago."""
    return (
        timers.update()
        .where(
            timers.c.status == PENDING,
            timers.c.execute_at < func.now() - seconds(recovery_window),
        )
        .values(
            status=TimerStatus.FAILED.value,
            last_error=func.concat(
                "missed: due at ",
                func.to_char(
                    func.timezone("UTC", timers.c.execute_at), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
                ),
                f", more than {recovery_window:g}s before a scheduler could fire it",
            ),
        )
    )


PENDING_BY_IDS = select(timers.c.id, timers.c.execute_at).where(
    timers.c.id == any_(bindparam("ids", type_=ARRAY(UUID(as_uuid=True)))),
    timers.c.status == PENDING,
)

CLAIMS = unnest("claim", id=UUID(as_uuid=True), number=Integer())


def claims_params(claims: Sequence[Claim]) -> dict[str, list[Any]]:
    """The parameters of `CLAIMS`."""
    return {
        "claim_id": [tid for tid, _ in claims],
        "claim_number": [int(number) for _, number in claims],
    }


def still_executing() -> Any:
    """`status = 'executing'`, for statements that join the timers they touch by id: written so
    that no index on `status` can serve it, and each row is found by its primary key.

    The planner estimates `status = 'executing'` from statistics gathered when few timers were
    executing (usually none), so it would read every `executing` row through an index on status
    and hash-join them with the ids: each statement then costs as much as the whole backlog of
    executing timers (30 ms for 50 rows beside 30,000 executing, against 1.5 ms by the primary
    key), which a burst or a worker falling behind makes large. IS NOT DISTINCT FROM means the
    same for this NOT NULL column and is no index condition."""
    return timers.c.status.is_not_distinct_from(EXECUTING)


def _update_claimed(*, unstarted: bool = False) -> Any:
    """An UPDATE of the rows still `executing` under one of the `CLAIMS` (id, claim number) (and, with
    `unstarted`, not started by a worker yet)."""
    conditions = [
        timers.c.id == CLAIMS.c.id,
        timers.c.attempts == CLAIMS.c.number,
        still_executing(),
    ]
    if unstarted:
        conditions.append(timers.c.started_at.is_(None))
    return timers.update().where(*conditions)


LEASE_END = func.now() + interval(bindparam("lease", type_=Float()))
# What started deliveries return: every column but the two JSON ones no delivery reads (decoding
# a history of up to HISTORY_LENGTH attempts for every delivery was a measurable share of the
# worker's CPU).
FOR_DELIVERY = [c for c in timers.c if c.name not in ("metadata", "history")]
# A claim returns no JSON at all: what the scheduler enqueues (id and claim number), the due
# time and an occurrence's schedule. Reading the callback config too made a claim's cost grow
# with the timers' size. Occurrences of schedules that are too late or would overlap are skipped
# in the same statement (queries.sql, `claim_due`).
CLAIM_DUE = text(queries["claim_due"]).bindparams(bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))
RELEASE = _update_claimed(unstarted=True).values(status=PENDING, claimed_at=None)
BEGIN = (
    _update_claimed(unstarted=True)
    .values(started_at=func.now(), leased_until=LEASE_END)
    .returning(*FOR_DELIVERY)
)
RENEW = _update_claimed().values(leased_until=LEASE_END)
OUTCOMES = unnest(
    "outcome",
    id=UUID(as_uuid=True),
    claim=Integer(),
    status=Text(),
    error=Text(),
    retry_in=Float(),
    entry=Text(),
)
_RETRYING = OUTCOMES.c.retry_in.is_not(None)
FINISH = (
    timers.update()
    .where(
        timers.c.id == OUTCOMES.c.id,
        timers.c.attempts == OUTCOMES.c.claim,
        still_executing(),
    )
    .values(
        status=OUTCOMES.c.status,
        last_error=OUTCOMES.c.error,
        executed_at=func.now(),
        leased_until=None,
        execute_at=case(
            (_RETRYING, func.now() + interval(cast(OUTCOMES.c.retry_in, Float()))),
            else_=timers.c.execute_at,
        ),
        claimed_at=case((_RETRYING, None), else_=timers.c.claimed_at),
        started_at=case((_RETRYING, None), else_=timers.c.started_at),
        delivery_attempts=timers.c.delivery_attempts + 1,
        history=case(
            (
                func.jsonb_array_length(timers.c.history) >= HISTORY_LENGTH,
                timers.c.history.op("-")(0).op("||")(cast(OUTCOMES.c.entry, JSONB)),
            ),
            else_=timers.c.history.op("||")(cast(OUTCOMES.c.entry, JSONB)),
        ),
    )
)


# A live schedule: not paused, and slots left before its `end_at`.
LIVE_SCHEDULE = (
    ~schedules.c.paused,
    or_(schedules.c.end_at.is_(None), schedules.c.materialized_until < schedules.c.end_at),
)


def schedules_to_top_up(within: float, mark: str) -> Any:
    """The live schedules whose latest occurrence made is due within `within` seconds, earliest
    first (at most SCHEDULES_PER_LOAD): (id, that slot, `mark`), a branch of the load's statement
    (the index on `materialized_until` of 0012 serves it)."""
    return (
        select(schedules.c.id, schedules.c.materialized_until, literal(mark, Text()))
        .where(*LIVE_SCHEDULE, schedules.c.materialized_until <= func.now() + seconds(within))
        .order_by(schedules.c.materialized_until)
        .limit(SCHEDULES_PER_LOAD)
    )
