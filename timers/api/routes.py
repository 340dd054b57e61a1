"""Routes of the `/timers` resource."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from timers.api.deps import Clock, Store
from timers.api.envelope import ApiError, Code, envelope
from timers.api.schemas import (
    Envelope,
    TimerBatch,
    TimerCreate,
    TimerList,
    TimerOut,
    TimerSummary,
    TimerUpdate,
)
from timers.models import CALLBACK_TYPES, HttpCallback, InvalidCallback, TimerStatus
from timers.storage import NewTimer, TimerNotFound, TimerNotPending

router = APIRouter(prefix="/timers", tags=["timers"])

# A request for "now" that takes a moment to arrive is not "in the past".
CLOCK_GRACE = timedelta(seconds=1)


def _check_execute_at(execute_at: datetime, now: datetime) -> None:
    if execute_at < now - CLOCK_GRACE:
        raise ApiError(
            Code.VALIDATION,
            f"execute_at: {execute_at.isoformat()} is in the past (server time {now.isoformat()})",
        )


def _check_callback(callback_type: str, config: dict[str, Any]) -> dict[str, Any]:
    if callback_type not in CALLBACK_TYPES:
        raise ApiError(
            Code.VALIDATION,
            f"callback_type: must be one of {', '.join(CALLBACK_TYPES)}, got {callback_type!r}",
        )
    if config.get("type", callback_type) != callback_type:
        raise ApiError(
            Code.VALIDATION,
            f"callback_config.type: {config.get('type')!r} does not match "
            f"callback_type {callback_type!r}",
        )
    try:
        return HttpCallback.from_config(config).to_config()
    except InvalidCallback as exc:
        raise ApiError(Code.VALIDATION, str(exc)) from None


def _not_found(timer_id: UUID) -> ApiError:
    return ApiError(Code.NOT_FOUND, f"timer {timer_id} not found")


def _not_pending(exc: TimerNotPending) -> ApiError:
    return ApiError(
        Code.VALIDATION,
        f"timer {exc.timer_id} is {exc.status.value}; only pending timers can be changed",
        {"id": str(exc.timer_id), "status": exc.status.value},
    )


@router.post("", status_code=201, response_model=Envelope, summary="Create a timer")
def create_timer(body: TimerCreate, store: Store, clock: Clock) -> JSONResponse:
    _check_execute_at(body.execute_at, clock())
    config = _check_callback(body.callback_type, body.callback_config)
    timer = store.create(
        NewTimer(
            execute_at=body.execute_at,
            callback_type=body.callback_type,
            callback_config=config,
            metadata=body.metadata,
        )
    )
    return envelope(TimerSummary.of(timer), message="created", status=201)


@router.post(
    "/batch", status_code=201, response_model=Envelope, summary="Create up to 1,000 timers"
)
def create_timers(body: TimerBatch, store: Store, clock: Clock) -> JSONResponse:
    """All or nothing: one invalid timer rejects the whole batch, naming its index."""
    now = clock()
    batch = []
    for index, item in enumerate(body.timers):
        try:
            _check_execute_at(item.execute_at, now)
            config = _check_callback(item.callback_type, item.callback_config)
        except ApiError as exc:
            raise ApiError(exc.code, f"timers[{index}].{exc.message}") from None
        batch.append(
            NewTimer(
                execute_at=item.execute_at,
                callback_type=item.callback_type,
                callback_config=config,
                metadata=item.metadata,
            )
        )
    created = store.create_many(batch)
    return envelope(
        {"timers": [TimerSummary.of(t) for t in created]}, message="created", status=201
    )


@router.get("/{timer_id}", response_model=Envelope, summary="Get a timer")
def get_timer(timer_id: UUID, store: Store) -> JSONResponse:
    try:
        timer = store.get(timer_id)
    except TimerNotFound:
        raise _not_found(timer_id) from None
    return envelope(TimerOut.of(timer))


@router.get("", response_model=Envelope, summary="List timers")
def list_timers(
    store: Store,
    status: TimerStatus | None = None,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0),
    sort: Literal["created_at", "execute_at"] = "created_at",
    order: Literal["asc", "desc"] = "desc",
) -> JSONResponse:
    page = store.page(status=status, limit=limit, offset=offset, sort=sort, order=order)
    return envelope(
        TimerList(
            timers=[TimerOut.of(t) for t in page.timers],
            total=page.total,
            limit=limit,
            offset=offset,
        )
    )


@router.put("/{timer_id}", response_model=Envelope, summary="Change a pending timer")
def update_timer(timer_id: UUID, body: TimerUpdate, store: Store, clock: Clock) -> JSONResponse:
    given = body.model_fields_set
    if not given:
        raise ApiError(
            Code.VALIDATION,
            "body: give at least one of execute_at, callback_type, callback_config, metadata",
        )
    changes: dict[str, Any] = {}
    for name in ("execute_at", "callback_type", "callback_config"):
        if name in given and getattr(body, name) is None:
            raise ApiError(Code.VALIDATION, f"{name}: must not be null")
    if body.execute_at is not None:
        _check_execute_at(body.execute_at, clock())
        changes["execute_at"] = body.execute_at
    if body.callback_type is not None or body.callback_config is not None:
        try:
            current = store.get(timer_id)
        except TimerNotFound:
            raise _not_found(timer_id) from None
        callback_type = body.callback_type or current.callback_type
        config = body.callback_config or dict(current.callback_config)
        if body.callback_config is None:
            config = {**config, "type": callback_type}
        changes["callback_type"] = callback_type
        changes["callback_config"] = _check_callback(callback_type, config)
    if "metadata" in given:
        changes["metadata"] = body.metadata
    try:
        timer = store.update_pending(timer_id, changes)
    except TimerNotFound:
        raise _not_found(timer_id) from None
    except TimerNotPending as exc:
        raise _not_pending(exc) from None
    return envelope(TimerOut.of(timer), message="updated")


@router.delete("/{timer_id}", response_model=Envelope, summary="Cancel a pending timer")
def cancel_timer(timer_id: UUID, store: Store) -> JSONResponse:
    try:
        timer = store.cancel(timer_id)
    except TimerNotFound:
        raise _not_found(timer_id) from None
    except TimerNotPending as exc:
        raise _not_pending(exc) from None
    return envelope({"id": timer.id, "status": timer.status.value}, message="canceled")
