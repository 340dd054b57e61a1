"""Routes of the `/timers` resource."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from timers import callbacks
from timers.api import bounds, compat, idempotency, pages
from timers.api.deps import ApiKey, Caller, Clock, MaxDelay, MaxPending, Rules, Store
from timers.api.envelope import ApiError, Code, envelope
from timers.api.schemas import (
    MAX_OFFSET,
    Canceled,
    CanceledCount,
    CancelFilter,
    Envelope,
    Instant,
    JsonObject,
    TimerBatch,
    TimerBatchCreated,
    TimerCreate,
    TimerDetail,
    TimerList,
    TimerOut,
    TimerSummary,
    TimerUpdate,
    errors,
)
from timers.errors import RedriveLimitReached
from timers.models import InvalidCallback, TimerStatus, check_json
from timers.retries import RetryPolicy
from timers.storage import (
    FINISHED,
    Created,
    IdempotencyKeyReused,
    NewTimer,
    TimerFilter,
    TimerNotFound,
    TimerNotPending,
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

# A request for "now" that takes a moment to arrive is not "in the past".
CLOCK_GRACE = timedelta(seconds=1)


def _check_execute_at(execute_at: datetime, now: datetime, max_delay: timedelta) -> None:
    try:
        in_the_past = execute_at < now - CLOCK_GRACE
        too_far = execute_at > now + max_delay
    except OverflowError:  # beyond year 9999 once converted to UTC
        in_the_past, too_far = False, True
    if in_the_past:
        raise ApiError(
            Code.VALIDATION,
            f"execute_at: {execute_at.isoformat()} is in the past (server time {now.isoformat()})",
        )
    if too_far:
        raise ApiError(
            Code.VALIDATION,
            f"execute_at: {execute_at.isoformat()} is more than {max_delay.days} days ahead "
            "(TIMERS_MAX_DELAY)",
        )


def _check_callback(
    callback_type: str, config: dict[str, Any], field: str, rules: Rules
) -> dict[str, Any]:
    try:
        callback = callbacks.parse(callback_type, config, field, rules=rules)
    except InvalidCallback as exc:
        raise ApiError(Code.VALIDATION, str(exc)) from None
    return callback.to_config()


def _check_retry(retry: BaseModel | None) -> dict[str, Any] | None:
    if retry is None:
        return None
    try:
        return RetryPolicy.from_config(retry.model_dump()).to_config()
    except InvalidCallback as exc:
        raise ApiError(Code.VALIDATION, str(exc)) from None


def _check_metadata(metadata: JsonObject | None) -> JsonObject | None:
    try:
        check_json(metadata, "metadata")
    except InvalidCallback as exc:
        raise ApiError(Code.VALIDATION, str(exc)) from None
    return metadata


def _new_timer(item: TimerCreate, rules: Rules, owner: str) -> NewTimer:
    """The timer a create asks for, its callback, metadata and bounds checked (not its time)."""
    asked = compat.requested(item, required=True)
    assert asked is not None
    config = _check_callback(*asked, rules)
    new = NewTimer(
        execute_at=item.execute_at,
        callback_type=config["type"],
        callback_config=config,
        metadata=_check_metadata(item.metadata),
        retry=_check_retry(item.retry),
        owner=owner,
    )
    bounds.check(new.callback_config, new.metadata, new.retry)
    return new


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
        _check_execute_at(new.execute_at, now, max_delay)
    except ApiError:
        if new.idempotency is None or store.find_by_key(new.idempotency) is None:
            raise


def _reused(exc: IdempotencyKeyReused, field: str = idempotency.HEADER) -> ApiError:
    return ApiError(Code.VALIDATION, f"{field}: {exc}", {"id": str(exc.timer_id)})


def _not_found(timer_id: UUID) -> ApiError:
    return ApiError(Code.NOT_FOUND, f"timer {timer_id} not found")


def _not_pending(exc: TimerNotPending) -> ApiError:
    return ApiError(
        Code.VALIDATION,
        f"timer {exc.timer_id} is {exc.status.value}; only pending timers can be changed",
        {"id": str(exc.timer_id), "status": exc.status.value},
    )


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
        _check_execute_at(body.execute_at, clock(), max_delay)
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
            raise ApiError(exc.code, bounds.in_batch(index, exc.message)) from None
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
        raise _not_found(timer_id) from None
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
    return _metadata_wanted(value)


def _metadata_wanted(value: JsonObject) -> JsonObject:
    """A metadata filter: a non-empty object (`{}` would match every timer with metadata)."""
    if not value:
        raise ApiError(Code.VALIDATION, "metadata: give at least one key to match")
    checked = _check_metadata(value)
    assert checked is not None
    return checked


def _check_range(after: datetime | None, before: datetime | None) -> None:
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
    _check_range(execute_after, execute_before)
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
    _check_range(body.execute_after, body.execute_before)
    where = TimerFilter(
        callback_type=body.callback_type,
        metadata=None if body.metadata is None else _metadata_wanted(body.metadata),
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
        _check_execute_at(body.execute_at, clock(), max_delay)
        changes["execute_at"] = body.execute_at
    asked = compat.requested(body, required=False)
    if asked is not None:
        changes["callback_type"] = asked[0]
        changes["callback_config"] = _check_callback(*asked, rules)
    elif body.callback_type is not None:
        raise ApiError(
            Code.VALIDATION, "callback_type: give callback_config too when changing the kind"
        )
    if "metadata" in given:
        changes["metadata"] = _check_metadata(body.metadata)
    if "retry" in given:
        changes["retry"] = _check_retry(body.retry)
    try:
        bounds.check_after(store, timer_id, changes, caller.scope)
        timer = store.update_pending(timer_id, changes, caller.scope)
    except TimerNotFound:
        raise _not_found(timer_id) from None
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
        raise _not_found(timer_id) from None
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
        raise _not_found(timer_id) from None
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
