"""Celery beat made stateless: `celery -A proj beat -S timers.celery.BeatScheduler`.

The scheduler sends nothing itself. At start, and again every few minutes, it makes each entry of
`app.conf.beat_schedule` a schedule of kind `celery` named `beat:<entry name>` (of the principal
`default`), created or updated in place, and deletes the `beat:` schedules whose entries are gone.
The timers scheduler then fires each slot once, as a task whose id is the occurrence's timer id.
So any number of beats may run at once: they write the same rows (upserts by name, the unique
(owner, name) index), and a slot is one timer whoever made it.

How an entry becomes a schedule:
- `crontab(...)` → a 5-field cron in `app.conf.timezone` (UTC when unset); Celery's day of week
  counts from Sunday = 0, as cron does. A crontab restricting both day of month and day of week
  is refused (Celery requires both, cron either).
- a `timedelta`, a number of seconds or `schedule(run_every=…)` → `every` seconds, anchored to
  2000-01-01 UTC so that every beat computes the same slots (an hourly entry fires on the hour).
- `args`, `kwargs`, options `queue` (else the queue Celery routes the task to) and `priority` are
  the callback's; `expires` and other options are not carried (a warning says so).
- missed slots after every timers scheduler was down: the latest fires once, as beat does.

The settings come from the environment as for `Timers.from_env()`: `DATABASE_URL`, the task broker
(`TIMERS_TASK_BROKER_URL`) and the allow-lists: every task of the beat schedule must be on
`TIMERS_CELERY_TASKS`, and its queue on `TIMERS_CELERY_QUEUES`. An entry refused is logged and left
out; the others are synced. A `beat:` schedule paused through the API stays paused.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import beat
from celery.schedules import crontab
from celery.schedules import schedule as interval_schedule

from timers.library import Timers, routed_queue
from timers.models import DEFAULT_OWNER, utc_now
from timers.schedules.api import Schedules
from timers.schedules.model import Schedule, ScheduleSpec
from timers.schedules.slots import InvalidSchedule
from timers.storage import ScheduleNameTaken, ScheduleNotFound, StoreError

log = logging.getLogger(__name__)

PREFIX = "beat:"
ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)  # where every beat's `every` slots are counted from
RESYNC_EVERY = 300.0  # seconds between syncs after the first
SLEEP = 60.0  # the longest a tick asks beat to sleep
_CARRIED = {"queue", "priority"}
_RANGES = {
    "minute": (0, 59),
    "hour": (0, 23),
    "day_of_month": (1, 31),
    "month_of_year": (1, 12),
    "day_of_week": (0, 6),
}


class UnsupportedEntry(ValueError):
    """A beat entry no schedule can express."""


@dataclass(frozen=True)
class Synced:
    """What one sync did, by schedule count."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    refused: int = 0


def cron_of(entry: crontab) -> str:
    """A crontab as a 5-field cron expression (minute hour day-of-month month day-of-week)."""
    fields = [_field(getattr(entry, name), *span) for name, span in _RANGES.items()]
    if fields[2] != "*" and fields[4] != "*":
        raise UnsupportedEntry(
            "a crontab restricting both day_of_month and day_of_week (cron fires on either)"
        )
    return " ".join(fields)


def _field(values: set[int], low: int, high: int) -> str:
    found = sorted(values)
    if found == list(range(low, high + 1)):
        return "*"
    step = found[1] - found[0] if len(found) > 1 else 0
    if step > 1 and found == list(range(low, high + 1, step)):
        return f"*/{step}"
    runs: list[str] = []
    start = prev = found[0]
    for value in [*found[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ",".join(runs)


def every_of(entry: Any) -> float:
    """The seconds of an interval entry (`timedelta`, number, `schedule(run_every=…)`)."""
    if isinstance(entry, interval_schedule) and not isinstance(entry, crontab):
        entry = entry.run_every
    if isinstance(entry, timedelta):
        return entry.total_seconds()
    if isinstance(entry, int | float) and not isinstance(entry, bool):
        return float(entry)
    raise UnsupportedEntry(f"a schedule of type {type(entry).__name__}")


def entry_spec(app: Any, schedules: Schedules, name: str, entry: Mapping[str, Any]) -> ScheduleSpec:
    """The spec of the schedule a `beat_schedule` entry becomes; raises UnsupportedEntry or
    InvalidSchedule."""
    task = entry.get("task")
    if not isinstance(task, str):
        raise UnsupportedEntry("an entry without a task name")
    options = dict(entry.get("options") or {})
    dropped = sorted(set(options) - _CARRIED)
    if dropped:
        log.warning("beat entry %r: options not carried: %s", name, ", ".join(dropped))
    queue = options.get("queue") or routed_queue(app.tasks.get(task)) or _route(app, task)
    config: dict[str, Any] = {
        "type": "celery",
        "task": task,
        "args": list(entry.get("args") or ()),
        "kwargs": dict(entry.get("kwargs") or {}),
    }
    if queue:
        config["queue"] = getattr(queue, "name", queue)
    if options.get("priority") is not None:
        config["priority"] = options["priority"]
    when = entry.get("schedule")
    timing: dict[str, Any] = (
        {"cron": cron_of(when), "timezone": str(app.conf.timezone or "UTC")}
        if isinstance(when, crontab)
        else {"every": every_of(when)}
    )
    return schedules.spec(
        "celery",
        config,
        now=utc_now(),
        start_at=ANCHOR,
        catchup="latest",
        name=PREFIX + name,
        metadata={"beat": name},
        owner=DEFAULT_OWNER,
        **timing,
    )


def _route(app: Any, task: str) -> str | None:
    try:
        found = app.amqp.router.route({}, task).get("queue")
    except Exception:
        return None
    name = getattr(found, "name", found)
    return name if isinstance(name, str) else None


def _same(stored: Schedule, wanted: ScheduleSpec) -> bool:
    mine = {k: v for k, v in stored.spec.columns().items() if k != "paused"}
    theirs = {k: v for k, v in wanted.columns().items() if k != "paused"}
    return mine == theirs


def beat_schedules(schedules: Schedules) -> dict[str, Schedule]:
    """The `beat:` schedules of the principal `default`, by name."""
    found: dict[str, Schedule] = {}
    after = None
    while True:
        page, after = schedules.store.page(DEFAULT_OWNER, limit=1000, after=after)
        found.update(
            (s.spec.name, s) for s in page if s.spec.name and s.spec.name.startswith(PREFIX)
        )
        if after is None:
            return found


def sync(app: Any, schedules: Schedules) -> Synced:
    """Make `app.conf.beat_schedule` the `beat:` schedules (see the module)."""
    stored = beat_schedules(schedules)
    wanted: dict[str, ScheduleSpec] = {}
    refused = 0
    for name, entry in (app.conf.beat_schedule or {}).items():
        try:
            wanted[PREFIX + name] = entry_spec(app, schedules, name, entry)
        except (UnsupportedEntry, InvalidSchedule) as exc:
            refused += 1
            log.error("beat entry %r left out: %s", name, exc, extra={"beat_entry": name})
    counts = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
    for name, spec in wanted.items():
        counts[_upsert(schedules, stored.get(name), spec)] += 1
    present = {PREFIX + n for n in (app.conf.beat_schedule or {})}  # refused ones are kept
    for name, schedule in stored.items():
        if name not in present:
            try:
                schedules.delete(schedule.id)
                counts["deleted"] += 1
            except ScheduleNotFound:  # another beat deleted it first
                pass
    return Synced(refused=refused, **counts)


def _upsert(schedules: Schedules, current: Schedule | None, spec: ScheduleSpec) -> str:
    if current is None:
        try:
            schedules.store.create(spec)
            return "created"
        except ScheduleNameTaken:  # another beat made it since we listed
            found, _ = schedules.store.page(DEFAULT_OWNER, name=spec.name, limit=1)
            if not found:
                return "unchanged"
            current = found[0]
    if _same(current, spec):
        return "unchanged"
    try:
        schedules.replace(current.id, dataclasses.replace(spec, paused=current.spec.paused))
    except ScheduleNotFound:
        return "unchanged"
    return "updated"


class BeatScheduler(beat.Scheduler):  # type: ignore[misc]
    """A `celery.beat.Scheduler` that syncs `beat_schedule` into schedules and sends nothing (see
    the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._timers: Timers | None = None
        self._next_sync = 0.0
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        # No default entries: Celery's `celery.backend_cleanup` is not a task a timer may send.
        self._timers = Timers.from_env()
        self._sync(fail=True)

    def _sync(self, fail: bool = False) -> None:
        assert self._timers is not None
        self._next_sync = time.monotonic() + RESYNC_EVERY
        try:
            done = sync(self.app, self._timers.schedules)
        except StoreError:
            if fail:
                raise
            log.warning("beat sync failed; trying again in %.0f s", RESYNC_EVERY, exc_info=True)
            return
        log.info(
            "beat schedule synced: %d created, %d updated, %d unchanged, %d deleted, %d refused",
            done.created,
            done.updated,
            done.unchanged,
            done.deleted,
            done.refused,
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Re-sync when due; never sends a task. Returns how long beat may sleep."""
        if self._timers is not None and time.monotonic() >= self._next_sync:
            self._sync()
        return max(1.0, min(SLEEP, self._next_sync - time.monotonic()))

    def sync(self) -> None:
        """Nothing to persist: the schedules are the state."""

    def close(self) -> None:
        if self._timers is not None:
            self._timers.close()
            self._timers = None

    @property
    def info(self) -> str:
        return "    . schedules -> timers (beat:<entry> schedules, fired by the timers scheduler)"
