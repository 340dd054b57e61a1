"""Routes of the `/timers` resource that make and read timers (create, batch, get, list); the
routes that change them are in `timers.api.changes`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from timers import admission
from timers.api import idempotency, pages
from timers.api.deps import ApiKey, Caller, Clock, MaxDelay, MaxPending, Rules, Store
from timers.api.envelope import ApiError, Code, envelope
from timers.api.schemas import (
    MAX_OFFSET,
    Envelope,
    Instant,
    JsonObject,
    TimerBatch,
    TimerBatchCreated,
    TimerCreate,
    TimerDetail,
    TimerList,
    TimerSummary,
    errors,
)
from timers.errors import InvalidTimer
from timers.models import TimerStatus
from timers.storage import (
    FINISHED,
    Created,
    IdempotencyKeyReused,
    NewTimer,
    TimerFilter,
    TimerNotFound,
)

router = APIRouter(prefix="/timers", tags=["timers"])

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        min_length=1,
        max_length=idempotency.MAX_KEY_LENGTH,
        pattern=idempotency.KEY_PATTERN,
        description=idempotency.KEY_DESCRIPTION,
    ),
]


def _new_timer(item: TimerCreate, rules: Rules, owner: str) -> NewTimer:
    """The timer a create asks for, its callback, metadata and bounds checked (not its time)."""
    asked = admission.requested_callback(item, required=True)
    assert asked is not None
    callback_type, config, field = asked
    return admission.admit(
        execute_at=item.execute_at,
        callback_type=callback_type,
        callback_config=config,
        rules=rules,
        field=field,
        metadata=item.metadata,
        retry=item.retry,
        owner=owner,
    )


def _check_quota(store: Store, owner: str, quota: int | None, adding: int) -> None:
    """Refuse (429) a create that would take this owner past its quota of pending timers. Two
    creates at once may both pass: the quota bounds, it does not count exactly."""
    if quota is None:
        return
    pending = store.count_pending(owner, quota)
    if pending + adding > quota:
        raise ApiError(
            Code.VALIDATION,
            f"quota: {owner} has {pending} pending timers of the {quota} it may have "
            "(TIMERS_MAX_PENDING_PER_KEY); cancel some or wait for them to fire",
            status=429,
        )


def _check_new(new: NewTimer, store: Store, now: datetime, max_delay: timedelta) -> None:
    """Refuse a time in the past or too far ahead, unless this is a retry of a create that made
    its timer already (a retry may come after the time it asked for)."""
    try:
        admission.check_due(new.execute_at, now, max_delay, "execute_at")
    except InvalidTimer:
        if new.idempotency is None or store.find_by_key(new.idempotency) is None:
            raise


def _reused(exc: IdempotencyKeyReused, field: str = idempotency.HEADER) -> ApiError:
    return ApiError(Code.VALIDATION, f"{field}: {exc}", {"id": str(exc.timer_id)})


def not_found(timer_id: UUID) -> ApiError:
    return ApiError(Code.NOT_FOUND, f"timer {timer_id} not found")


@router.post(
    "",
    status_code=201,
    response_model=Envelope[TimerSummary],
    responses={
        200: {
            "model": Envelope[TimerSummary],
            "description": "a retry: this Idempotency-Key made this timer already, from the "
            "same request; nothing new was made",
        },
        **errors(400, 401, 413, 429, 500),
    },
    summary="Create a timer",
)
def create_timer(
    body: TimerCreate,
    store: Store,
    clock: Clock,
    rules: Rules,
    max_delay: MaxDelay,
    max_pending: MaxPending,
    api_key: ApiKey,
    caller: Caller,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """With an `Idempotency-Key`, a retry makes no second timer: it answers 200 with the first
    one (as it is now), and a different request under the same key is refused. The timer
    belongs to the principal of the API key; beyond its quota of pending timers, 429."""
    new = _new_timer(body, rules, caller.name)
    if idempotency_key is None:
        admission.check_due(body.execute_at, clock(), max_delay, "execute_at")
        _check_quota(store, caller.name, max_pending, 1)
        timer = store.create(new)
        return envelope(TimerSummary.of(timer), message="created", status=201)
    _check_quota(store, caller.name, max_pending, 1)
    new = idempotency.with_key(new, idempotency_key, api_key)
    try:
        _check_new(new, store, clock(), max_delay)
        [answer] = store.create_once([new])
    except IdempotencyKeyReused as exc:
        raise _reused(exc) from None
    if answer.created:
        return envelope(TimerSummary.of(answer.timer), message="created", status=201)
    return envelope(TimerSummary.of(answer.timer), message="already created with this key")


@router.post(
    "/batch",
    status_code=201,
    response_model=Envelope[TimerBatchCreated],
    responses={
        200: {
            "model": Envelope[TimerBatchCreated],
            "description": "every timer had a `key` that made it already, from the same "
            "request; nothing new was made",
        },
        **errors(400, 401, 413, 429, 500),
    },
    summary="Create up to 1,000 timers",
)
def create_timers(
    body: TimerBatch,
    store: Store,
    clock: Clock,
    rules: Rules,
    max_delay: MaxDelay,
    max_pending: MaxPending,
    api_key: ApiKey,
    caller: Caller,
) -> JSONResponse:
    """All or nothing: one invalid timer rejects the whole batch, naming its index. A timer with
    a `key` that made one already (from the same request) is not made again: the batch answers
    with that one in its place (201 if any timer was made, else 200)."""
    now = clock()
    batch = []
    for index, item in enumerate(body.timers):
        try:
            new = idempotency.with_key(_new_timer(item, rules, caller.name), item.key, api_key)
            _check_new(new, store, now, max_delay)
        except ApiError as exc:
            raise ApiError(exc.code, admission.in_batch(index, exc.message)) from None
        except InvalidTimer as exc:
            raise ApiError(Code.VALIDATION, admission.in_batch(index, str(exc))) from None
        except IdempotencyKeyReused as exc:
            raise _reused(exc, f"timers[{index}].key") from None
        batch.append(new)
    _check_quota(store, caller.name, max_pending, len(batch))
    answers: list[Created]
    if all(new.idempotency is None for new in batch):
        answers = [Created(timer, True) for timer in store.create_many(batch)]
    else:
        try:
            answers = store.create_once(batch)
        except IdempotencyKeyReused as exc:
            raise _reused(exc, f"timers[{exc.index}].key") from None
    made = any(answer.created for answer in answers)
    return envelope(
        TimerBatchCreated(timers=[TimerSummary.of(a.timer) for a in answers]),
        message="created" if made else "already created with these keys",
        status=201 if made else 200,
    )


@router.get(
    "/{timer_id}",
    response_model=Envelope[TimerDetail],
    responses=errors(400, 401, 404, 500),
    summary="Get a timer",
)
def get_timer(timer_id: UUID, store: Store, caller: Caller) -> JSONResponse:
    """Another principal's timer is answered as if it did not exist (404)."""
    try:
        timer = store.get(timer_id, caller.scope)
    except TimerNotFound:
        raise not_found(timer_id) from None
    return envelope(TimerDetail.of(timer))


def _metadata_filter(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(
            Code.VALIDATION, 'metadata: must be a JSON object, e.g. {"tenant": "acme"}'
        ) from None
    if not isinstance(value, dict):
        raise ApiError(Code.VALIDATION, 'metadata: must be a JSON object, e.g. {"tenant": "acme"}')
    return metadata_wanted(value)


def metadata_wanted(value: JsonObject) -> JsonObject:
    """A metadata filter: a non-empty object (`{}` would match every timer with metadata)."""
    if not value:
        raise ApiError(Code.VALIDATION, "metadata: give at least one key to match")
    checked = admission.checked_metadata(value)
    assert checked is not None
    return checked


def check_range(after: datetime | None, before: datetime | None) -> None:
    if after is not None and before is not None and before <= after:
        raise ApiError(Code.VALIDATION, "execute_before: must be later than execute_after")


@router.get(
    "",
    response_model=Envelope[TimerList],
    responses=errors(400, 401, 500),
    summary="List timers",
)
def list_timers(
    store: Store,
    caller: Caller,
    status: TimerStatus | None = None,
    callback_type: Literal["http", "celery", "nats"] | None = None,
    metadata: str | None = Query(
        None,
        max_length=4096,
        description='Timers whose metadata contains this JSON object, e.g. {"tenant":"acme"}.',
    ),
    execute_after: Annotated[
        Instant | None, Query(description="`execute_at` at or after this (ISO 8601).")
    ] = None,
    execute_before: Annotated[
        Instant | None, Query(description="`execute_at` before this (ISO 8601).")
    ] = None,
    schedule_id: Annotated[
        UUID | None, Query(description="The occurrences of this schedule (its history).")
    ] = None,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    cursor: str | None = Query(
        None,
        max_length=200,
        description="The `next_cursor` of the previous page: the page right after it, as fast "
        "at any depth (the sort and order must be the same).",
    ),
    total: bool = Query(
        True,
        description="Count the matching timers: exactly while that is cheap, else the database's "
        "estimate (`total_exact` false); `false` skips it.",
    ),
    sort: Literal["created_at", "execute_at", "updated_at"] = "created_at",
    order: Literal["asc", "desc"] = "desc",
) -> JSONResponse:
    """Up to `limit` timers; a page also stops at the timer that brings it to 4 MiB of JSON, and
    then holds fewer than `limit` with a `next_cursor` that goes on right after its last timer
    (by `offset`, go on from `offset` plus the number of timers received)."""
    check_range(execute_after, execute_before)
    if sort == "updated_at" and status not in FINISHED:
        raise ApiError(
            Code.VALIDATION,
            "sort: updated_at needs a finished status (completed, failed or canceled): only those "
            "are indexed by when they changed",
        )
    if cursor is not None and offset:
        raise ApiError(Code.VALIDATION, "cursor: give either cursor or offset, not both")
    where = TimerFilter(
        status=status,
        callback_type=callback_type,
        metadata=_metadata_filter(metadata),
        execute_after=execute_after,
        execute_before=execute_before,
        schedule_id=schedule_id,
        owner=caller.scope,
    )
    after = None if cursor is None else pages.decode(cursor, sort, order)
    page = store.page(
        where=where,
        limit=limit,
        offset=offset,
        sort=sort,
        order=order,
        after=after,
        with_total=total,
    )
    listed, after_page = pages.bounded(page, sort)
    return envelope(
        TimerList(
            timers=listed,
            total=page.total,
            total_exact=page.total_exact,
            limit=limit,
            offset=offset,
            next_cursor=None if after_page is None else pages.encode(after_page, sort, order),
        )
    )
