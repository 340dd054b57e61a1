"""Routes of the `/schedules` resource: recurring schedules, each slot of which becomes one timer
(an occurrence, with `schedule_id` and `scheduled_for`). Same envelope, keys and principals as
`/timers`: a schedule belongs to the principal that made it; admins see all."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from timers import admission
from timers.api import compat
from timers.api.deps import Caller, Clock, Rules
from timers.api.envelope import ApiError, Code, envelope
from timers.api.schemas import (
    CallbackConfig,
    CallbackType,
    Envelope,
    Instant,
    JsonObject,
    RetryConfig,
    TimerSummary,
    errors,
    redacted,
)
from timers.schedules.model import Schedule, ScheduleSpec
from timers.schedules.plan import next_fire_times
from timers.schedules.slots import InvalidSchedule, Timing
from timers.storage import ScheduleNameTaken, ScheduleNotFound, ScheduleStore

router = APIRouter(prefix="/schedules", tags=["schedules"])

NEXT_FIRE_TIMES = 5
LAST_OCCURRENCES = 10
_WHEN = ("cron", "every")
_CALLBACK = ("callback", "callback_type", "callback_config")


class ScheduleCreate(BaseModel):
    """A schedule: `cron` (5 fields, or 6 with seconds first) in `timezone`, or `every` N
    seconds from `start_at`; each slot becomes a timer with this callback."""

    model_config = ConfigDict(extra="forbid")
    cron: str | None = Field(default=None, max_length=200, examples=["*/5 * * * *"])
    every: float | None = Field(default=None, description="Seconds between slots (at least 1).")
    timezone: str = Field(default="UTC", max_length=100, examples=["Europe/Paris"])
    start_at: Instant | None = Field(default=None, description="No slot before it (default: now).")
    end_at: Instant | None = Field(default=None, description="No slot at or after it.")
    jitter: float = Field(default=0, ge=0, le=86400, description="Up to this many seconds late.")
    catchup: Literal["skip", "latest", "all"] = "skip"
    catchup_window: float | None = Field(default=None, gt=0)
    overlap: Literal["allow", "skip"] = "allow"
    paused: bool = False
    name: str | None = Field(default=None, min_length=1, max_length=200)
    callback_type: CallbackType | None = None
    callback_config: CallbackConfig | None = None
    callback: compat.Callback | None = None
    retry: RetryConfig | None = None
    metadata: JsonObject | None = None


class ScheduleUpdate(ScheduleCreate):
    """Any of the create fields; those not given stay as they are."""

    timezone: str | None = Field(default=None, max_length=100)  # type: ignore[assignment]
    jitter: float | None = Field(default=None, ge=0, le=86400)  # type: ignore[assignment]
    catchup: Literal["skip", "latest", "all"] | None = None  # type: ignore[assignment]
    overlap: Literal["allow", "skip"] | None = None  # type: ignore[assignment]
    paused: bool | None = None  # type: ignore[assignment]


async def schedule_store(request: Request) -> ScheduleStore:
    """The schedules of the app's store (PostgreSQL's, or the in-memory twin's)."""
    found: ScheduleStore = request.app.state.store.schedules
    return found


Schedules = Annotated[ScheduleStore, Depends(schedule_store)]


def _spec(body: ScheduleCreate, rules: Any, owner: str, now: datetime) -> ScheduleSpec:
    asked = admission.requested_callback(body, required=True)
    assert asked is not None
    config = admission.checked_callback(*asked, rules)
    retry = admission.checked_retry(body.retry)
    metadata = admission.checked_metadata(body.metadata)
    admission.check_bounds(config, metadata, retry)
    try:
        timing = Timing(
            start_at=body.start_at or now,
            cron=body.cron,
            every=body.every,
            timezone=body.timezone or "UTC",
            end_at=body.end_at,
        )
        return ScheduleSpec(
            timing=timing,
            callback_type=config["type"],
            callback_config=config,
            jitter=body.jitter or 0.0,
            catchup=body.catchup or "skip",
            catchup_window=body.catchup_window,
            overlap=body.overlap or "allow",
            paused=bool(body.paused),
            name=body.name,
            retry=retry,
            metadata=metadata,
            owner=owner,
        )
    except InvalidSchedule as exc:
        raise ApiError(Code.VALIDATION, str(exc)) from None


def _current(schedule: Schedule) -> dict[str, Any]:
    """A schedule's spec as the body that would make it."""
    spec, t = schedule.spec, schedule.spec.timing
    return {
        "cron": t.cron,
        "every": t.every,
        "timezone": t.timezone,
        "start_at": t.start_at,
        "end_at": t.end_at,
        "jitter": spec.jitter,
        "catchup": spec.catchup,
        "catchup_window": spec.catchup_window,
        "overlap": spec.overlap,
        "paused": spec.paused,
        "name": spec.name,
        "callback_type": spec.callback_type,
        "callback_config": dict(spec.callback_config),
        "retry": None if spec.retry is None else dict(spec.retry),
        "metadata": None if spec.metadata is None else dict(spec.metadata),
    }


def shown(schedule: Schedule, now: datetime, *, detail: bool = False) -> dict[str, Any]:
    spec, t = schedule.spec, schedule.spec.timing
    fire = [] if spec.paused else next_fire_times(schedule, now, NEXT_FIRE_TIMES)
    out: dict[str, Any] = {
        "id": str(schedule.id),
        **_current(schedule),
        "callback_config": redacted(spec.callback_config),
        "state": schedule.state(now).value,
        "skipped": schedule.skipped,
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
        "next_fire_times": fire,
    }
    if detail:
        out["next_fire_times_local"] = [f.astimezone(t.zone).isoformat() for f in fire]
    return out


def _not_found(schedule_id: UUID) -> ApiError:
    return ApiError(Code.NOT_FOUND, f"schedule {schedule_id} not found")


def _taken(exc: ScheduleNameTaken) -> ApiError:
    return ApiError(Code.VALIDATION, str(exc))


Answer = Envelope[dict[str, Any]]


@router.post(
    "",
    status_code=201,
    response_model=Answer,
    responses=errors(400, 401, 413, 500),
    summary="Create a schedule",
)
def create_schedule(
    body: ScheduleCreate, schedules: Schedules, clock: Clock, rules: Rules, caller: Caller
) -> JSONResponse:
    """Answers its id and its next 5 fire times; its next slots exist as pending timers."""
    now = clock()
    spec = _spec(body, rules, caller.name, now)
    try:
        schedule = schedules.create(spec)
    except ScheduleNameTaken as exc:
        raise _taken(exc) from None
    return envelope(shown(schedule, now), message="created", status=201)


@router.get("", response_model=Answer, responses=errors(400, 401, 500), summary="List schedules")
def list_schedules(
    schedules: Schedules,
    clock: Clock,
    caller: Caller,
    name: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=10_000),
    cursor: Annotated[
        UUID | None, Query(description="The `next_cursor` of the previous page.")
    ] = None,
) -> JSONResponse:
    if cursor is not None and offset:
        raise ApiError(Code.VALIDATION, "cursor: give either cursor or offset, not both")
    found, after = schedules.page(caller.scope, name=name, limit=limit, offset=offset, after=cursor)
    now = clock()
    return envelope(
        {
            "schedules": [shown(s, now) for s in found],
            "limit": limit,
            "offset": offset,
            "next_cursor": None if after is None else str(after),
        }
    )


@router.get(
    "/{schedule_id}",
    response_model=Answer,
    responses=errors(400, 401, 404, 500),
    summary="Get",
)
def get_schedule(
    schedule_id: UUID, schedules: Schedules, clock: Clock, caller: Caller
) -> JSONResponse:
    """Its config, state (active, paused, ended), next 5 fire times in UTC and in its zone, and
    its last occurrences (`GET /timers?schedule_id=…` pages through all of them)."""
    try:
        schedule = schedules.get(schedule_id, caller.scope)
    except ScheduleNotFound:
        raise _not_found(schedule_id) from None
    out = shown(schedule, clock(), detail=True)
    out["last_occurrences"] = [
        {
            **TimerSummary.of(t).model_dump(mode="json"),
            "scheduled_for": t.scheduled_for,
            "last_error": t.last_error,
        }
        for t in schedules.occurrences(schedule_id, LAST_OCCURRENCES)
    ]
    return envelope(out)


@router.put(
    "/{schedule_id}",
    response_model=Answer,
    responses=errors(400, 401, 404, 500),
    summary="Change",
)
def update_schedule(
    schedule_id: UUID,
    body: ScheduleUpdate,
    schedules: Schedules,
    clock: Clock,
    rules: Rules,
    caller: Caller,
) -> JSONResponse:
    """Applies from the next unfired slot: its pending occurrences are replaced by ones under the
    new config (one executing goes on). Fields not given stay."""
    try:
        current = schedules.get(schedule_id, caller.scope)
    except ScheduleNotFound:
        raise _not_found(schedule_id) from None
    given = body.model_dump(exclude_unset=True)
    merged = _current(current)
    if any(k in given for k in _WHEN):
        for k in _WHEN:
            merged.pop(k)
    if any(k in given for k in _CALLBACK):
        for k in ("callback_type", "callback_config"):
            merged.pop(k)
    merged.update(given)
    try:
        full = ScheduleCreate.model_validate(merged)
    except ValueError as exc:
        raise ApiError(Code.VALIDATION, f"{exc}".splitlines()[0]) from None
    now = clock()
    spec = _spec(full, rules, current.spec.owner, now)
    try:
        schedule = schedules.replace(schedule_id, spec, caller.scope)
    except ScheduleNotFound:
        raise _not_found(schedule_id) from None
    except ScheduleNameTaken as exc:
        raise _taken(exc) from None
    return envelope(shown(schedule, now), message="updated")


@router.delete(
    "/{schedule_id}",
    response_model=Answer,
    responses=errors(400, 401, 404, 500),
    summary="Delete",
)
def delete_schedule(schedule_id: UUID, schedules: Schedules, caller: Caller) -> JSONResponse:
    """Deletes it and cancels its pending occurrences; the fired ones stay as history."""
    try:
        canceled = schedules.delete(schedule_id, caller.scope)
    except ScheduleNotFound:
        raise _not_found(schedule_id) from None
    return envelope({"id": str(schedule_id), "deleted": True, "canceled": canceled})


def _pause(
    schedule_id: UUID, schedules: Schedules, clock: Clock, caller: Caller, paused: bool
) -> Any:
    try:
        schedule = schedules.set_paused(schedule_id, paused, caller.scope)
    except ScheduleNotFound:
        raise _not_found(schedule_id) from None
    return envelope(shown(schedule, clock()), message="paused" if paused else "resumed")


@router.post("/{schedule_id}/pause", response_model=Answer, responses=errors(400, 401, 404, 500))
def pause_schedule(schedule_id: UUID, schedules: Schedules, clock: Clock, caller: Caller) -> Any:
    """No slot fires until resumed (its pending occurrences are removed)."""
    return _pause(schedule_id, schedules, clock, caller, True)


@router.post("/{schedule_id}/resume", response_model=Answer, responses=errors(400, 401, 404, 500))
def resume_schedule(schedule_id: UUID, schedules: Schedules, clock: Clock, caller: Caller) -> Any:
    """Slots fire again from now on; those that fell while paused do not."""
    return _pause(schedule_id, schedules, clock, caller, False)


@router.post(
    "/{schedule_id}/trigger",
    status_code=201,
    response_model=Answer,
    responses=errors(400, 401, 404, 500),
)
def trigger_schedule(schedule_id: UUID, schedules: Schedules, caller: Caller) -> JSONResponse:
    """One extra occurrence, due now (the slots go on as before)."""
    try:
        timer = schedules.trigger(schedule_id, caller.scope)
    except ScheduleNotFound:
        raise _not_found(schedule_id) from None
    out = {**TimerSummary.of(timer).model_dump(mode="json"), "schedule_id": str(schedule_id)}
    return envelope(out, message="triggered", status=201)
