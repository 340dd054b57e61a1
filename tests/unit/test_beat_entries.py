"""How `timers.celery.BeatScheduler` reads a `beat_schedule` entry's timing (pure)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.schedules import crontab, schedule

from timers.beat import UnsupportedEntry, cron_of, every_of


@pytest.mark.parametrize(
    ("entry", "cron"),
    [
        (crontab(), "* * * * *"),
        (crontab(minute="*/15"), "*/15 * * * *"),
        (crontab(minute=0, hour="9-17", day_of_week="mon-fri"), "0 9-17 * * 1-5"),
        (crontab(minute="0,30", hour=3, day_of_week="sun"), "*/30 3 * * 0"),
        (
            crontab(minute=5, hour=0, day_of_month="1,15", month_of_year="*/3"),
            "5 0 1,15 */3 *",
        ),
        (crontab(minute="*/7"), "*/7 * * * *"),
    ],
)
def test_a_crontab_is_the_same_cron(entry: crontab, cron: str) -> None:
    assert cron_of(entry) == cron


def test_both_day_fields_are_refused() -> None:
    # Celery requires both to match, cron either: no cron expression says the same.
    with pytest.raises(UnsupportedEntry):
        cron_of(crontab(minute=0, hour=0, day_of_month=13, day_of_week="fri"))


@pytest.mark.parametrize(
    "entry", [timedelta(seconds=2), 2, 2.0, schedule(run_every=timedelta(seconds=2))]
)
def test_an_interval_is_its_seconds(entry: object) -> None:
    assert every_of(entry) == 2.0


def test_other_schedules_are_refused() -> None:
    with pytest.raises(UnsupportedEntry):
        every_of("every day")
