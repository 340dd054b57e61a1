"""Routes that change timers of the `/timers` resource: cancel (one, or the pending ones a filter
matches), update a pending timer, redrive a failed one."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from timers import admission
from timers.api.deps import Caller, Clock, MaxDelay, Rules, Store
from timers.api.envelope import ApiError, Code, envelope
from timers.api.routes import check_range, metadata_wanted, not_found
from timers.api.schemas import (
    Canceled,
    CanceledCount,
    CancelFilter,
    Envelope,
    TimerOut,
    TimerUpdate,
    errors,
)
from timers.errors import RedriveLimitReached
from timers.storage import TimerFilter, TimerNotFound, TimerNotPending

router = APIRouter(prefix="/timers", tags=["timers"])


def _not_pending(exc: TimerNotPending) -> ApiError:
    return ApiError(
        Code.VALIDATION,
        f"timer {exc.timer_id} is {exc.status.value}; only pending timers can be changed",
        {"id": str(exc.timer_id), "status": exc.status.value},
    )


@router.post(
    "/cancel",
    response_model=Envelope[CanceledCount],
    responses=errors(400, 401, 413, 500),
    summary="Cancel the pending timers matching a filter",
)
def cancel_timers(body: CancelFilter, store: Store, caller: Caller) -> JSONResponse:
    """One statement: every pending timer of the caller's (an admin: of anyone's) matching all
    the conditions given becomes `canceled`; a timer a scheduler claimed meanwhile is left to
    fire. Answers how many were canceled."""
    check_range(body.execute_after, body.execute_before)
    where = TimerFilter(
        callback_type=body.callback_type,
        metadata=None if body.metadata is None else metadata_wanted(body.metadata),
        execute_after=body.execute_after,
        execute_before=body.execute_before,
        owner=caller.scope,
    )
    if where.is_empty and not body.all:
        raise ApiError(
            Code.VALIDATION,
            "body: give at least one of metadata, execute_after, execute_before, callback_type "
            '(or "all": true to cancel every pending timer)',
        )
    if body.all and not where.is_empty:
        raise ApiError(
            Code.VALIDATION, "all: true cancels every pending timer; give no filter with it"
        )
    canceled = store.cancel_matching(where)
    return envelope(CanceledCount(canceled=canceled), message=f"canceled {canceled}")


@router.put(
    "/{timer_id}",
    response_model=Envelope[TimerOut],
    responses=errors(400, 401, 404, 413, 500),
    summary="Change a pending timer",
)
def update_timer(
    timer_id: UUID,
    body: TimerUpdate,
    store: Store,
    clock: Clock,
    rules: Rules,
    max_delay: MaxDelay,
    caller: Caller,
) -> JSONResponse:
    given = body.model_fields_set
    if not given:
        raise ApiError(
            Code.VALIDATION,
            "body: give at least one of execute_at, callback_type, callback_config (or callback), "
            "metadata",
        )
    changes: dict[str, Any] = {}
    for name in ("execute_at", "callback_type", "callback_config", "callback"):
        if name in given and getattr(body, name) is None:
            raise ApiError(Code.VALIDATION, f"{name}: must not be null")
    if body.execute_at is not None:
        admission.check_due(body.execute_at, clock(), max_delay, "execute_at")
        changes["execute_at"] = body.execute_at
    asked = admission.requested_callback(body, required=False)
    if asked is not None:
        changes["callback_type"] = asked[0]
        changes["callback_config"] = admission.checked_callback(*asked, rules)
    elif body.callback_type is not None:
        raise ApiError(
            Code.VALIDATION, "callback_type: give callback_config too when changing the kind"
        )
    if "metadata" in given:
        changes["metadata"] = admission.checked_metadata(body.metadata)
    if "retry" in given:
        changes["retry"] = admission.checked_retry(body.retry)
    try:
        admission.check_bounds_after(store, timer_id, changes, caller.scope)
        timer = store.update_pending(timer_id, changes, caller.scope)
    except TimerNotFound:
        raise not_found(timer_id) from None
    except TimerNotPending as exc:
        raise _not_pending(exc) from None
    return envelope(TimerOut.of(timer), message="updated")


@router.delete(
    "/{timer_id}",
    response_model=Envelope[Canceled],
    responses=errors(400, 401, 404, 500),
    summary="Cancel a pending timer",
)
def cancel_timer(timer_id: UUID, store: Store, caller: Caller) -> JSONResponse:
    try:
        timer = store.cancel(timer_id, caller.scope)
    except TimerNotFound:
        raise not_found(timer_id) from None
    except TimerNotPending as exc:
        raise _not_pending(exc) from None
    return envelope(Canceled(id=timer.id, status="canceled"), message="canceled")


@router.post(
    "/{timer_id}/retry",
    response_model=Envelope[TimerOut],
    responses=errors(400, 401, 404, 500),
    summary="Redrive a failed timer",
)
def redrive_timer(timer_id: UUID, store: Store, caller: Caller) -> JSONResponse:
    """Put a `failed` timer back to fire now, with a fresh attempt budget (its history is kept);
    400 for a timer in any other status, and for one redriven 10 times already."""
    try:
        timer = store.redrive(timer_id, caller.scope)
    except TimerNotFound:
        raise not_found(timer_id) from None
    except TimerNotPending as exc:
        raise ApiError(
            Code.VALIDATION,
            f"timer {exc.timer_id} is {exc.status.value}; only failed timers can be retried",
            {"id": str(exc.timer_id), "status": exc.status.value},
        ) from None
    except RedriveLimitReached as exc:
        raise ApiError(
            Code.VALIDATION, str(exc), {"id": str(exc.timer_id), "redrives": exc.redrives}
        ) from None
    return envelope(TimerOut.of(timer), message="retrying")
