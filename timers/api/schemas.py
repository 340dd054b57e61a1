"""Request and response bodies of the REST API. The constraints here are the ones the API enforces,
so the OpenAPI document describes what is accepted; checks that need more than a schema (the
destination's address, `execute_at` against the clock) follow in the routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
)
from pydantic.config import JsonDict

from timers.api import compat
from timers.api.idempotency import KEY_DESCRIPTION, KEY_PATTERN, MAX_KEY_LENGTH
from timers.callbacks.celery import CeleryConfig
from timers.callbacks.http import HttpConfig
from timers.callbacks.nats import NatsConfig
from timers.models import Timer, TimerStatus
from timers.retries import MAX_ATTEMPTS
from timers.retries import MAX_DELAY as MAX_RETRY_DELAY
from timers.retries import MIN_DELAY as MIN_RETRY_DELAY

REDACTED = "***"
MAX_BATCH = 1000
MAX_OFFSET = 1_000_000


def _iso_8601_text(value: Any) -> Any:
    # Pydantic would take a bare number as Unix time; the contract says ISO 8601 text.
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 date-time string with an offset")
    return value


ExecuteAt = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_8601_text),
    Field(
        description="When to fire: ISO 8601 with an offset (`Z` or `+01:00`), not in the past "
        "and at most TIMERS_MAX_DELAY ahead.",
        examples=["2030-01-01T14:03:07.250Z"],
    ),
]
JsonObject = dict[str, Any]


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


# A point in time that filters (not one to fire at): ISO 8601 with an offset, kept in UTC.
Instant = Annotated[AwareDatetime, BeforeValidator(_iso_8601_text), AfterValidator(_in_utc)]
CallbackType = Literal["http", "celery", "nats"]


def _config_kind(config: Any) -> str:
    if isinstance(config, dict):
        return str(config.get("type", "http"))
    return str(getattr(config, "type", "http"))


# One schema per callback kind, told apart by `type` (`http` when absent).
CallbackConfig = Annotated[
    Annotated[HttpConfig, Tag("http")]
    | Annotated[CeleryConfig, Tag("celery")]
    | Annotated[NatsConfig, Tag("nats")],
    Discriminator(_config_kind),
]


class RetryConfig(BaseModel):
    """How often, and when, a failed delivery is tried again (network errors, timeouts, 408, 429,
    5xx; `Retry-After` honoured up to `max_delay`). Full jitter on exponential backoff. At most
    25 attempts, and never less than a second between two."""

    model_config = ConfigDict(extra="forbid")
    max_attempts: int = Field(default=1, ge=1, le=MAX_ATTEMPTS)
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial_delay: float = Field(default=1.0, ge=MIN_RETRY_DELAY, le=MAX_RETRY_DELAY)
    max_delay: float = Field(default=3600.0, ge=MIN_RETRY_DELAY, le=MAX_RETRY_DELAY)


# A create gives its callback one way: ours (`callback_config`) or mca-timer's (`callback`).
_ONE_CALLBACK: JsonDict = {"oneOf": [{"required": ["callback_config"]}, {"required": ["callback"]}]}


class TimerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_CALLBACK)
    execute_at: ExecuteAt
    callback_type: CallbackType | None = Field(
        default=None, description="The callback kind; by default `callback_config.type`."
    )
    callback_config: CallbackConfig | None = None
    callback: compat.Callback | None = None
    metadata: JsonObject | None = Field(
        default=None,
        description="Your own JSON object, kept with the timer: at most 32 top-level keys. "
        "Callback config, metadata and retry policy are at most 64 KiB together (compact JSON).",
    )
    retry: RetryConfig | None = Field(
        default=None, description="This timer's retry policy; by default the server's."
    )


class TimerBatchItem(TimerCreate):
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=KEY_PATTERN,
        description="This timer's idempotency key, as the `Idempotency-Key` header is for "
        "`POST /timers`: " + KEY_DESCRIPTION,
    )


class TimerBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timers: list[TimerBatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class TimerUpdate(BaseModel):
    """Any subset of the create fields (at least one); `metadata: null` clears it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    execute_at: ExecuteAt | None = None
    callback_type: CallbackType | None = None
    callback_config: CallbackConfig | None = None
    callback: compat.Callback | None = None
    metadata: JsonObject | None = None
    retry: RetryConfig | None = None


class TimerSummary(BaseModel):
    """A timer in short: every field of mca-timer's `TimerResponse`."""

    id: UUID
    status: TimerStatus
    execute_at: datetime
    created_at: datetime
    callback_type: str
    executed_at: datetime | None

    @classmethod
    def of(cls, timer: Timer) -> TimerSummary:
        return cls(
            id=timer.id,
            status=timer.status,
            execute_at=timer.execute_at,
            created_at=timer.created_at,
            callback_type=timer.callback_type,
            executed_at=timer.executed_at,
        )


class TimerBatchCreated(BaseModel):
    timers: list[TimerSummary]


def redacted(config: Any) -> dict[str, Any]:
    """A callback config as responses show it: header names kept, their values replaced."""
    shown = dict(config) if isinstance(config, dict) else {"value": config}
    headers = shown.get("headers")
    if isinstance(headers, dict):
        shown["headers"] = {name: REDACTED for name in headers}
    return shown


class Attempt(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: int
    outcome: Literal["completed", "failed", "retrying"]
    status: int | None = Field(description="The receiver's HTTP status, if it answered.")
    error: str | None


class TimerOut(BaseModel):
    id: UUID
    status: TimerStatus
    execute_at: datetime
    callback_type: str
    callback_config: dict[str, Any] = Field(
        description="As given, except header values, which are never shown (`***`)."
    )
    created_at: datetime
    updated_at: datetime
    executed_at: datetime | None
    last_error: str | None
    metadata: dict[str, Any] | None
    claims: int = Field(description="How many times the scheduler claimed it.")
    attempts: int = Field(
        deprecated=True,
        description="Deprecated: the same value as `claims` (its name before), kept for the "
        "clients that read it. Delivery attempts are `delivery_attempts`.",
    )
    retry: dict[str, Any] | None
    delivery_attempts: int = Field(description="Delivery attempts under the current budget.")
    next_attempt_at: datetime | None = Field(
        description="When a retry that waits will be made (a pending timer that was tried)."
    )
    history: list[Attempt] = Field(description="The last attempts, oldest first (at most 20).")

    @classmethod
    def of(cls, timer: Timer) -> TimerOut:
        return cls(
            id=timer.id,
            status=timer.status,
            execute_at=timer.execute_at,
            callback_type=timer.callback_type,
            callback_config=redacted(timer.callback_config),
            created_at=timer.created_at,
            updated_at=timer.updated_at,
            executed_at=timer.executed_at,
            last_error=timer.last_error,
            metadata=None if timer.metadata is None else dict(timer.metadata),
            claims=timer.claims,
            attempts=timer.claims,
            retry=None if timer.retry is None else dict(timer.retry),
            delivery_attempts=timer.delivery_attempts,
            next_attempt_at=(
                timer.execute_at
                if timer.status is TimerStatus.PENDING and timer.delivery_attempts
                else None
            ),
            history=[Attempt.model_validate(entry) for entry in timer.history],
        )


class TimerDetail(TimerOut):
    callback: dict[str, Any] = Field(
        description="The callback as mca-timer shows it: `callback_config` tagged by `type` "
        "(header values `***`; a `nats` subject also as `topic`)."
    )

    @classmethod
    def of(cls, timer: Timer) -> TimerDetail:
        shown = compat.tagged(timer.callback_type, redacted(timer.callback_config))
        return cls(**dict(TimerOut.of(timer)), callback=shown)


class TimerList(BaseModel):
    timers: list[TimerOut]
    total: int | None = Field(
        description="Every timer matching the filters: exact while that is cheap, else the "
        "database's estimate (`total_exact` false); null with `total=false`."
    )
    total_exact: bool | None = Field(description="Whether `total` is exact (null without one).")
    limit: int
    offset: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page (null after the last page)."
    )


class CancelFilter(BaseModel):
    """Which pending timers to cancel: every condition given must hold (at least one, or
    `all`)."""

    model_config = ConfigDict(extra="forbid")

    metadata: JsonObject | None = Field(
        None, description="Timers whose metadata contains this object."
    )
    execute_after: Instant | None = Field(None, description="`execute_at` at or after this.")
    execute_before: Instant | None = Field(None, description="`execute_at` before this.")
    callback_type: Literal["http", "celery", "nats"] | None = None
    all: bool = Field(False, description="Cancel every pending timer (when no filter is given).")


class CanceledCount(BaseModel):
    canceled: int


class LatenessMinute(BaseModel):
    minute: datetime
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class Stats(BaseModel):
    counts: dict[str, int] = Field(description="Timers by status.")
    counts_estimated: bool = Field(
        description="The counts are the planner's estimates (a table of 100,000 rows or more)."
    )
    due_backlog: int = Field(description="Pending timers already due, not yet claimed.")
    lateness: list[LatenessMinute] = Field(
        description="Per minute of the last 15, the lateness (started − due) of finished deliveries."
    )
    flower_url: str | None = Field(description="Flower's address (TIMERS_FLOWER_URL), if set.")


class Canceled(BaseModel):
    id: UUID
    status: Literal["canceled"]


class Health(BaseModel):
    status: Literal["up", "degraded"]
    database: Literal["connected", "unreachable"]
    version: str


class Healthz(BaseModel):
    status: Literal["up", "degraded"]
    database: Literal["connected", "disconnected"]
    timestamp: datetime = Field(description="The server's time (UTC).")


T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """Every successful response: `code` 0 and the data."""

    code: Literal[0] = 0
    message: str = "ok"
    data: T


class ErrorEnvelope(BaseModel):
    """Every error: `code` 1 internal, 2 validation, 3 not found, 4 unauthorized; `message` says
    what went wrong and names the field."""

    code: Literal[1, 2, 3, 4]
    message: str
    data: Any = None


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route: each error status it can answer, with the envelope."""
    meaning = {
        400: "invalid request (code 2), naming the field",
        401: "missing or wrong X-API-Key (code 4)",
        404: "no such timer (code 3)",
        413: "body too large (code 2)",
        429: "the principal's quota of pending timers is full (code 2)",
        500: "internal error or database unavailable (code 1)",
    }
    return {s: {"model": ErrorEnvelope, "description": meaning[s]} for s in statuses}
