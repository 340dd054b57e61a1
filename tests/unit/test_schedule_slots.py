"""When schedules fire, where the wall clock jumps: the written rules of timers.schedules.slots,
on the hard zones (30- and 45-minute offsets, 30-minute changes) on both change days."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from timers.schedules.slots import InvalidSchedule, Timing, jitter_for


def local(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))


def daily(cron: str, zone: str, day_before: tuple[int, int, int], days: int = 3) -> list[str]:
    """The slots of `cron` from noon on `day_before`, as local wall times with their offset."""
    start = local(zone, *day_before, 12)
    timing = Timing(start_at=start, cron=cron, timezone=zone)
    return [s.astimezone(ZoneInfo(zone)).isoformat() for s in timing.next_slots(start, days)]


@pytest.mark.parametrize(
    ("cron", "zone", "day_before", "expected"),
    [
        # New York springs forward on 2026-03-08 at 02:00 → 03:00: 02:30 does not exist.
        ("30 2 * * *", "America/New_York", (2026, 3, 7),
         ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]),
        ("30 1 * * *", "America/New_York", (2026, 3, 7),
         ["2026-03-08T01:30:00-05:00", "2026-03-09T01:30:00-04:00", "2026-03-10T01:30:00-04:00"]),
        # It falls back on 2026-11-01 at 02:00 → 01:00: 01:30 exists twice, 02:30 once.
        ("30 1 * * *", "America/New_York", (2026, 10, 31),
         ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"]),
        ("30 2 * * *", "America/New_York", (2026, 10, 31),
         ["2026-11-01T02:30:00-05:00", "2026-11-02T02:30:00-05:00", "2026-11-03T02:30:00-05:00"]),
        # London: 01:00 → 02:00 on 2026-03-29, 02:00 → 01:00 on 2026-10-25.
        ("30 1 * * *", "Europe/London", (2026, 3, 28),
         ["2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00", "2026-03-31T01:30:00+01:00"]),
        ("30 1 * * *", "Europe/London", (2026, 10, 24),
         ["2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00", "2026-10-27T01:30:00+00:00"]),
        # Lord Howe moves by 30 minutes: 02:00 → 02:30 on 2026-10-04, 02:00 → 01:30 on 2026-04-05.
        ("15 2 * * *", "Australia/Lord_Howe", (2026, 10, 3),
         ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00", "2026-10-06T02:15:00+11:00"]),
        ("45 1 * * *", "Australia/Lord_Howe", (2026, 4, 4),
         ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30", "2026-04-07T01:45:00+10:30"]),
        # Chatham is +12:45 / +13:45: 02:45 → 03:45 on 2026-09-27, 03:45 → 02:45 on 2026-04-05.
        ("0 3 * * *", "Pacific/Chatham", (2026, 9, 26),
         ["2026-09-27T03:45:00+13:45", "2026-09-28T03:00:00+13:45", "2026-09-29T03:00:00+13:45"]),
        ("0 3 * * *", "Pacific/Chatham", (2026, 4, 4),
         ["2026-04-05T03:00:00+13:45", "2026-04-06T03:00:00+12:45", "2026-04-07T03:00:00+12:45"]),
        # Six fields (seconds first) follow the same rules.
        ("10 30 2 * * *", "America/New_York", (2026, 3, 7),
         ["2026-03-08T03:00:10-04:00", "2026-03-09T02:30:10-04:00", "2026-03-10T02:30:10-04:00"]),
        ("0 30 1 * * *", "America/New_York", (2026, 10, 31),
         ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"]),
    ],
)  # fmt: skip
def test_wall_clock_times_across_the_changes(
    cron: str, zone: str, day_before: tuple[int, int, int], expected: list[str]
) -> None:
    assert daily(cron, zone, day_before) == expected


def test_two_times_of_one_gap_fire_once_at_its_end() -> None:
    slots = daily("0,30 2 * * *", "America/New_York", (2026, 3, 7), 3)
    assert slots == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00",
                     "2026-03-09T02:30:00-04:00"]  # fmt: skip


def test_real_time_expressions_fire_twice_in_the_repeated_hour_and_never_in_the_skipped() -> None:
    zone = "America/New_York"
    back = Timing(start_at=local(zone, 2026, 11, 1, 0, 50), cron="*/30 * * * *", timezone=zone)
    got = [s.astimezone(ZoneInfo(zone)).isoformat() for s in back.next_slots(back.start_at, 6)]
    assert got == [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:00:00-05:00", "2026-11-01T02:30:00-05:00",
    ]  # fmt: skip
    forward = Timing(start_at=local(zone, 2026, 3, 8, 1, 10), cron="0 * * * *", timezone=zone)
    got = [
        s.astimezone(ZoneInfo(zone)).isoformat() for s in forward.next_slots(forward.start_at, 2)
    ]
    assert got == ["2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"]  # 01:10 → 02:10 real


def test_every_is_elapsed_time_anchored_to_its_start() -> None:
    zone = "America/New_York"
    start = local(zone, 2026, 3, 7, 9)
    timing = Timing(start_at=start, every=86400, timezone=zone)
    got = [s.astimezone(ZoneInfo(zone)).isoformat() for s in timing.next_slots(start, 2)]
    # 24 hours after 09:00 EST is 10:00 EDT: elapsed time, not a calendar day.
    assert got == ["2026-03-08T10:00:00-04:00", "2026-03-09T10:00:00-04:00"]
    # Anchored: asked after any instant, the slots stay on the grid from start_at (no drift).
    every7 = Timing(start_at=datetime(2026, 1, 1, tzinfo=UTC), every=7)
    after = datetime(2026, 1, 1, 0, 1, 3, 500_000, tzinfo=UTC)
    assert every7.next_slots(after, 2) == [
        datetime(2026, 1, 1, 0, 1, 10, tzinfo=UTC), datetime(2026, 1, 1, 0, 1, 17, tzinfo=UTC)
    ]  # fmt: skip
    assert every7.next_slots(every7.start_at - timedelta(days=1), 1) == [every7.start_at]


def test_slots_start_at_start_at_and_stop_before_end_at() -> None:
    start = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    timing = Timing(start_at=start, cron="* * * * *", end_at=start + timedelta(minutes=3))
    assert timing.next_slots(start - timedelta(hours=1), 10) == [
        datetime(2026, 1, 1, 0, m, tzinfo=UTC) for m in (1, 2, 3)
    ]


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "* * * * * * *"}, "cron"),
        ({"cron": "* * * * *", "every": 5}, "cron"),
        ({}, "cron"),
        ({"every": 0.5}, "every"),
        ({"every": 0}, "every"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "* * * * *", "timezone": "../etc/passwd"}, "timezone"),
        ({"every": 5, "end_at": datetime(2025, 1, 1, tzinfo=UTC)}, "end_at"),
        ({"every": 5, "end_at": datetime(2026, 1, 1, tzinfo=UTC)}, "end_at"),
    ],
)
def test_a_timing_that_cannot_fire_names_its_field(given: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        Timing(start_at=datetime(2026, 1, 1, tzinfo=UTC), **given)  # type: ignore[arg-type]
    assert info.value.field == field, info.value


def test_jitter_is_the_same_everywhere_and_within_its_bound() -> None:
    schedule = uuid.UUID(int=42)
    slot = datetime(2026, 1, 1, tzinfo=UTC)
    delays = {jitter_for(schedule, slot, 30) for _ in range(3)}
    assert len(delays) == 1
    spread = [jitter_for(uuid.UUID(int=n), slot, 30).total_seconds() for n in range(1000)]
    assert all(0 <= d <= 30 for d in spread)
    assert 10 < sum(spread) / len(spread) < 20  # spread over the whole window, not bunched
    assert jitter_for(schedule, slot, 0) == timedelta(0)


@pytest.mark.parametrize(
    ("cron", "zone"),
    [
        ("30 2 * * *", "America/New_York"),
        ("*/20 * * * *", "America/New_York"),
        ("15 2 * * *", "Australia/Lord_Howe"),
        ("0 */7 * * 1-5", "Pacific/Chatham"),
        ("*/10 * * * * *", "UTC"),
    ],
)
def test_slots_worked_out_a_few_at_a_time_and_remembered_are_the_calendars_own(
    cron: str, zone: str
) -> None:
    # Slots come from remembered chunks of a few (shared by every schedule with the same
    # expression and zone). Read from different starting points, inside chunks and at their
    # ends, across the spring change (New York 2026-03-08, Lord Howe and Chatham 2026-04-05) and
    # for the daily ones the autumn one too, they are what one uninterrupted walk gives.
    from itertools import islice

    from timers.schedules.slots import CHUNK, _cron_walk

    start = datetime(2026, 3, 6, tzinfo=UTC)
    walked = list(islice(_cron_walk(cron, ZoneInfo(zone), start), 400))
    timing = Timing(start_at=start - timedelta(days=1), cron=cron, timezone=zone)
    assert timing.next_slots(start, 400) == walked
    for k in (0, 1, CHUNK - 1, CHUNK, 37, 250):
        assert timing.next_slots(walked[k], 40) == walked[k + 1 : k + 41]
