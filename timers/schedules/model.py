"""A schedule as a value: what it asks for (`ScheduleSpec`) and what is stored (`Schedule`)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from timers.models import DEFAULT_OWNER
from timers.schedules.slots import InvalidSchedule, Timing

CATCHUPS = ("skip", "latest", "all")
OVERLAPS = ("allow", "skip")


class ScheduleState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ENDED = "ended"


@dataclass(frozen=True)
class ScheduleSpec:
    """Everything a schedule is asked to be: when (`timing`), how it catches up and overlaps, and
    the timer each slot becomes (callback, retry policy, metadata)."""

    timing: Timing
    callback_type: str
    callback_config: Mapping[str, Any]
    jitter: float = 0.0
    catchup: str = "skip"
    catchup_window: float | None = None
    overlap: str = "allow"
    paused: bool = False
    name: str | None = None
    retry: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None
    owner: str = DEFAULT_OWNER

    def __post_init__(self) -> None:
        if not self.jitter >= 0:
            raise InvalidSchedule("jitter", f"must be 0 or more seconds, got {self.jitter!r}")
        if self.catchup not in CATCHUPS:
            raise InvalidSchedule("catchup", f"must be one of {', '.join(CATCHUPS)}")
        if self.overlap not in OVERLAPS:
            raise InvalidSchedule("overlap", f"must be one of {', '.join(OVERLAPS)}")
        if self.catchup_window is not None and not self.catchup_window > 0:
            raise InvalidSchedule("catchup_window", "must be more than 0 seconds")

    def columns(self) -> dict[str, Any]:
        """The `schedules` columns this spec sets."""
        t = self.timing
        return {
            "cron": t.cron,
            "every": t.every,
            "timezone": t.timezone,
            "start_at": t.start_at,
            "end_at": t.end_at,
            "jitter": self.jitter,
            "catchup": self.catchup,
            "catchup_window": self.catchup_window,
            "overlap": self.overlap,
            "paused": self.paused,
            "name": self.name,
            "callback_type": self.callback_type,
            "callback_config": dict(self.callback_config),
            "retry": None if self.retry is None else dict(self.retry),
            "metadata": None if self.metadata is None else dict(self.metadata),
            "owner": self.owner,
        }


@dataclass(frozen=True)
class Schedule:
    """A stored schedule: its spec, id and bookkeeping (`materialized_until`: the latest slot made
    into a timer; `skipped`: slots skipped so far)."""

    id: uuid.UUID
    spec: ScheduleSpec
    created_at: datetime
    updated_at: datetime
    materialized_until: datetime
    skipped: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Schedule:
        timing = Timing(
            start_at=row["start_at"],
            cron=row["cron"],
            every=row["every"],
            timezone=row["timezone"],
            end_at=row["end_at"],
        )
        spec = ScheduleSpec(
            timing=timing,
            callback_type=row["callback_type"],
            callback_config=row["callback_config"] or {},
            jitter=row["jitter"],
            catchup=row["catchup"],
            catchup_window=row["catchup_window"],
            overlap=row["overlap"],
            paused=row["paused"],
            name=row["name"],
            retry=row["retry"],
            metadata=row["metadata"],
            owner=row["owner"],
        )
        return cls(
            id=row["id"],
            spec=spec,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            materialized_until=row["materialized_until"],
            skipped=row["skipped"],
        )

    def state(self, now: datetime) -> ScheduleState:
        if self.spec.paused:
            return ScheduleState.PAUSED
        if not self.spec.timing.next_slots(now, 1):
            return ScheduleState.ENDED
        return ScheduleState.ACTIVE
