"""When a schedule fires: its slots, as instants in UTC. Pure: no clock, no store.

A schedule is a `cron` expression read in an IANA `timezone`, or `every` N seconds anchored to
`start_at`. The rules where the wall clock jumps (written once here, and in docs/schedules.md):

- A cron expression whose minute and hour fields are both fixed (`30 2 * * *`, `0 15 9 * * 1-5`)
  names wall-clock times. On a day the clocks spring forward, a time that does not exist fires at
  the first minute that does (02:30 in New York → 03:00; 02:15 on Lord Howe, whose clocks move by
  30 minutes, → 02:30). On a day they fall back, a time that exists twice fires once, at its first
  occurrence (the earlier instant, still on summer time).
- A cron expression with `*` in its minute or hour field (`*/15 * * * *`, `0 * * * *`) counts
  real time: it fires at each instant whose wall time matches, so on a fall-back day the repeated
  hour's matches fire twice (once per offset) and on a spring-forward day the skipped hour's
  never.
- `every` is elapsed time, whatever the zone: `every: 86400` is 24 hours, so across a change of
  the clocks its wall time moves by the change; a calendar day is `0 9 * * *`.

The cron library is cronsim (strict parsing with clear errors, typed, maintained with
healthchecks.io, and Debian cron's rules above for the first two cases); it reads the expression
and walks the calendar, and this module only maps its wall times to instants.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import islice
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

MINUTE = timedelta(minutes=1)
# Cron slots are worked out this many at a time and remembered by (expression, zone, instant):
# schedules that share an expression and fire together (10,000 `* * * * *` at :00) are planned
# from one walk of the calendar instead of one each.
CHUNK = 4
REMEMBERED = 4096


class InvalidSchedule(ValueError):
    """A schedule that can't fire as given; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Timing:
    """When a schedule's slots fall: `cron` in `timezone`, or `every` seconds from `start_at`;
    none before `start_at`, none at or after `end_at`."""

    start_at: datetime
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    end_at: datetime | None = None

    def __post_init__(self) -> None:
        check_timing(self)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def slots(self, after: datetime) -> Iterator[datetime]:
        """The slots strictly after `after`, in order, in UTC (ending at `end_at`)."""
        found = _every_after(self, after) if self.every is not None else _cron_after(self, after)
        for slot in found:
            if self.end_at is not None and slot >= self.end_at:
                return
            yield slot

    def next_slots(self, after: datetime, count: int) -> list[datetime]:
        """At most `count` slots strictly after `after`."""
        out: list[datetime] = []
        for slot in self.slots(after):
            out.append(slot)
            if len(out) == count:
                break
        return out


def check_timing(timing: Timing) -> None:
    """Raise InvalidSchedule naming the field of a timing that can't fire."""
    if (timing.cron is None) == (timing.every is None):
        raise InvalidSchedule("cron", "give either cron or every")
    if timing.start_at.tzinfo is None or timing.start_at.utcoffset() is None:
        raise InvalidSchedule("start_at", "must have an offset")
    try:
        ZoneInfo(timing.timezone)
    except (ValueError, KeyError, OSError):
        raise InvalidSchedule(
            "timezone", f"{timing.timezone!r} is not an IANA time zone such as Europe/Paris"
        ) from None
    if timing.every is not None and not timing.every >= 1:
        raise InvalidSchedule("every", f"must be at least 1 second, got {timing.every!r}")
    if timing.cron is not None:
        fields = timing.cron.split()
        if len(fields) not in (5, 6):
            raise InvalidSchedule(
                "cron",
                "must have 5 fields (minute hour day month weekday), or 6 with seconds first",
            )
        problem = _cron_problem(timing.cron)
        if problem is not None:
            raise InvalidSchedule("cron", f"{timing.cron!r}: {problem}")
    if timing.end_at is not None and timing.end_at <= timing.start_at:
        raise InvalidSchedule("end_at", "must be later than start_at")


@lru_cache(maxsize=REMEMBERED)
def _cron_problem(expression: str) -> str | None:
    """Why cronsim refuses an expression, or None."""
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as exc:
        return str(exc)
    return None


def _every_after(timing: Timing, after: datetime) -> Iterator[datetime]:
    assert timing.every is not None
    period = timedelta(seconds=timing.every)
    start = timing.start_at.astimezone(UTC)
    done = 0 if after < start else (after - start) // period + 1
    while True:
        yield start + done * period
        done += 1


def wall_clock(expression: str) -> bool:
    """Whether a cron expression names wall-clock times (its minute and hour fields fixed)."""
    fields = expression.split()
    minute, hour = (fields[0], fields[1]) if len(fields) == 5 else (fields[1], fields[2])
    return not minute.startswith("*") and not hour.startswith("*")


def _cron_after(timing: Timing, after: datetime) -> Iterator[datetime]:
    assert timing.cron is not None
    after = max(after, timing.start_at - timedelta(microseconds=1)).astimezone(UTC)
    while chunk := _cron_chunk(timing.cron, timing.timezone, after):
        yield from chunk
        after = chunk[-1]


@lru_cache(maxsize=REMEMBERED)
def _cron_chunk(expression: str, timezone: str, after: datetime) -> tuple[datetime, ...]:
    """The next `CHUNK` slots of a cron expression in a zone strictly after `after` (UTC); fewer
    when it has no more."""
    found = _cron_walk(expression, ZoneInfo(timezone), after)
    return tuple(islice(found, CHUNK))


def _cron_walk(expression: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    if not wall_clock(expression):
        # Real time: cronsim walks aware instants, so each matching instant comes once.
        for slot in CronSim(expression, after.astimezone(zone)):
            yield slot.astimezone(UTC)
        return
    # Wall-clock times: walk the calendar in local time, then place each time on the clock.
    # Starting a little earlier finds a time of the gap that lands after `after`; two times of one
    # gap land on the same minute, which fires once.
    local = after.astimezone(zone).replace(tzinfo=None)
    last = after
    for wall in CronSim(expression, local - timedelta(hours=3)):
        slot = placed(wall, zone)
        if slot > last:
            last = slot
            yield slot


def placed(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a wall-clock time names in a zone: its first occurrence when the clock shows
    it twice; when it doesn't exist, the first minute after it that does."""
    candidate = wall
    while not _exists(candidate, zone):
        candidate += MINUTE
    return candidate.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _exists(wall: datetime, zone: ZoneInfo) -> bool:
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    return instant.astimezone(zone).replace(tzinfo=None) == wall


def jitter_for(schedule_id: uuid.UUID, slot: datetime, jitter: float) -> timedelta:
    """The delay after its slot an occurrence fires at, within `jitter` seconds: the same on every
    process (derived from the schedule and the slot), spread evenly over the schedules."""
    if jitter <= 0:
        return timedelta(0)
    digest = hashlib.blake2b(f"{schedule_id}/{slot.isoformat()}".encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    return timedelta(seconds=round(fraction * jitter, 3))
