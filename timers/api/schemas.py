"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from timers.models import Timer, TimerStatus


class CallbackConfig(BaseModel):
    """For `callback_type` `http`: POST `payload` as JSON to `url` with `headers`."""

    model_config = ConfigDict(extra="allow")
    type: str = "http"
    url: str
    headers: dict[str, Any] = Field(default_factory=dict)
    payload: Any = None


class TimerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    execute_at: AwareDatetime = Field(
        description="When to fire: ISO 8601 with an offset, not in the past.",
        examples=["2030-01-01T14:03:07.250Z"],
    )
    callback_type: str = Field(default="http", examples=["http"])
    callback_config: dict[str, Any] = Field(
        examples=[{"type": "http", "url": "https://example.com/hook", "headers": {}, "payload": {}}]
    )
    metadata: dict[str, Any] | None = None


MAX_BATCH = 1000


class TimerBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timers: list[TimerCreate] = Field(min_length=1, max_length=MAX_BATCH)


class TimerUpdate(BaseModel):
    """Any subset of the create fields; `metadata: null` clears it."""

    model_config = ConfigDict(extra="forbid")
    execute_at: AwareDatetime | None = None
    callback_type: str | None = None
    callback_config: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class TimerSummary(BaseModel):
    id: UUID
    status: TimerStatus
    execute_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, timer: Timer) -> TimerSummary:
        return cls(
            id=timer.id,
            status=timer.status,
            execute_at=timer.execute_at,
            created_at=timer.created_at,
        )


class TimerOut(BaseModel):
    id: UUID
    status: TimerStatus
    execute_at: datetime
    callback_type: str
    callback_config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    executed_at: datetime | None
    last_error: str | None
    metadata: dict[str, Any] | None
    attempts: int

    @classmethod
    def of(cls, timer: Timer) -> TimerOut:
        return cls(
            id=timer.id,
            status=timer.status,
            execute_at=timer.execute_at,
            callback_type=timer.callback_type,
            callback_config=dict(timer.callback_config),
            created_at=timer.created_at,
            updated_at=timer.updated_at,
            executed_at=timer.executed_at,
            last_error=timer.last_error,
            metadata=None if timer.metadata is None else dict(timer.metadata),
            attempts=timer.attempts,
        )


class TimerList(BaseModel):
    timers: list[TimerOut]
    total: int
    limit: int
    offset: int


class Envelope(BaseModel):
    code: int = 0
    message: str = "ok"
    data: Any = None
