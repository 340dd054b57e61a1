"""The beat sync alone (timers.beat): `beat_schedule` entries become `beat:` schedules, here on the
in-memory store (its schedules held to PostgreSQL's contract by tests/contract). Two beats running
for minutes on PostgreSQL are in tests/faults/test_beat_twice.py."""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab

from timers.beat import Synced, beat_schedules, sync
from timers.config import Settings
from timers.library import Timers
from timers.testing import InMemoryStore


def test_a_sync_creates_updates_keeps_and_deletes_by_entry_name(
    settings: Settings, store: InMemoryStore
) -> None:
    """The sync alone: entries become `beat:` schedules once, a changed entry is
    updated in place (a paused one stays paused), a refused one keeps its schedule, a removed
    one's schedule is deleted; schedules it did not make are left alone."""
    app = Celery("shop", set_as_current=False)
    app.conf.task_default_queue = "shop"
    app.conf.timezone = "Europe/Paris"
    app.conf.beat_schedule = {
        "nightly": {"task": "shop.tasks.report", "schedule": crontab(minute=30, hour=2)},
        "often": {"task": "shop.tasks.poll", "schedule": 90.0, "args": [1]},
    }
    library = Timers(settings=settings, store=store)
    with library:
        schedules = library.schedules
        other = library.create_schedule(
            "celery", {"type": "celery", "task": "shop.tasks.x", "queue": "shop"}, every=60.0
        )
        assert sync(app, schedules) == Synced(created=2)
        assert sync(app, schedules) == Synced(unchanged=2)  # a second beat: nothing to do
        made = beat_schedules(schedules)
        nightly, often = made["beat:nightly"].spec, made["beat:often"].spec
        assert (nightly.timing.cron, nightly.timing.timezone) == ("30 2 * * *", "Europe/Paris")
        assert often.timing.every == 90.0
        assert often.callback_config["args"] == [1]
        assert often.callback_config["queue"] == "shop"
        schedules.pause(made["beat:often"].id)
        app.conf.beat_schedule["often"]["args"] = [2]
        app.conf.beat_schedule["bad"] = {"task": "elsewhere.task", "schedule": 5}
        assert sync(app, schedules) == Synced(updated=1, unchanged=1, refused=1)
        often_now = beat_schedules(schedules)["beat:often"]
        assert often_now.id == made["beat:often"].id  # in place
        assert often_now.spec.callback_config["args"] == [2] and often_now.spec.paused
        del app.conf.beat_schedule["nightly"]
        assert sync(app, schedules) == Synced(deleted=1, unchanged=1, refused=1)
        assert set(beat_schedules(schedules)) == {"beat:often"}
        assert schedules.get(other.id).id == other.id
