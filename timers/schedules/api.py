"""Schedules from Python: `Schedules` on a store's schedules, used by `timers.library.Timers` (its
`create_schedule`, `get_schedule`, … methods). Checks what the REST API checks: the callback by
the same kind parsers and rules, the timer bounds, the timing (`InvalidSchedule`, naming the
field)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from timers import callbacks
from timers.callbacks import CallbackRules
from timers.models import DEFAULT_OWNER, InvalidField, check_json, check_timer_bounds
from timers.schedules.model import Schedule, ScheduleSpec
from timers.schedules.slots import InvalidSchedule, Timing
from timers.storage import ScheduleStore


class Schedules:
    def __init__(self, store: ScheduleStore, rules: CallbackRules) -> None:
        self.store = store
        self.rules = rules

    def create(
        self, callback_type: str, callback_config: Mapping[str, Any], **options: Any
    ) -> Schedule:
        """A schedule and its first occurrences (options as `spec`); raises InvalidSchedule
        naming the field."""
        return self.store.create(self.spec(callback_type, callback_config, **options))

    def spec(
        self,
        callback_type: str,
        callback_config: Mapping[str, Any],
        *,
        now: datetime,
        cron: str | None = None,
        every: float | None = None,
        timezone: str = "UTC",
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        jitter: float = 0.0,
        catchup: str = "skip",
        catchup_window: float | None = None,
        overlap: str = "allow",
        paused: bool = False,
        name: str | None = None,
        retry: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        owner: str = DEFAULT_OWNER,
    ) -> ScheduleSpec:
        """The checked spec of a schedule (nothing stored); raises InvalidSchedule naming the
        field."""
        try:
            config = callbacks.parse(
                callback_type, dict(callback_config), rules=self.rules
            ).to_config()
            if metadata is not None:
                check_json(dict(metadata), "metadata")
            check_timer_bounds(config, metadata, retry)
        except InvalidField as exc:
            raise InvalidSchedule(exc.field, exc.reason) from None
        timing = Timing(
            start_at=start_at or now, cron=cron, every=every, timezone=timezone, end_at=end_at
        )
        return ScheduleSpec(
            timing=timing,
            callback_type=config["type"],
            callback_config=config,
            jitter=jitter,
            catchup=catchup,
            catchup_window=catchup_window,
            overlap=overlap,
            paused=paused,
            name=name,
            retry=None if retry is None else dict(retry),
            metadata=None if metadata is None else dict(metadata),
            owner=owner,
        )

    def replace(self, schedule_id: uuid.UUID, spec: ScheduleSpec) -> Schedule:
        """Give the schedule `spec` from its next unfired slot (see `ScheduleStore.replace`)."""
        return self.store.replace(schedule_id, spec, None)

    def get(self, schedule_id: uuid.UUID) -> Schedule:
        return self.store.get(schedule_id)

    def delete(self, schedule_id: uuid.UUID) -> int:
        """Delete it; returns how many pending occurrences were canceled."""
        return self.store.delete(schedule_id, None)

    def pause(self, schedule_id: uuid.UUID) -> Schedule:
        return self.store.set_paused(schedule_id, True, None)

    def resume(self, schedule_id: uuid.UUID) -> Schedule:
        return self.store.set_paused(schedule_id, False, None)
