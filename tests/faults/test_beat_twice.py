"""Celery beat run twice: under `timers.celery.BeatScheduler` each slot's task runs once; under
Celery's own scheduler every tick fires twice (the comparison). A user application
(tests/support/beat_app.py: a crontab every minute and a 2-second interval) with its own broker,
queue and `celery worker`; two `celery beat` processes; the timers scheduler and worker as shipped.
Real PostgreSQL and Redis. Minutes long (two minute boundaries): it runs with the fault suite
(`make test-faults`), beside the other scenarios."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support import beat_app, processes
from tests.support.databases import create_database, drop_database
from tests.support.private_services import PrivateRedis
from tests.support.receiver import wait_until
from tests.support.services import Services
from timers.config import settings_from_env
from timers.library import Timers

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420), pytest.mark.xdist_group("schedules")]

RUN_AT_MOST = 130.0  # seconds of two beats under timers (two minute boundaries when it can)
PLAIN_RUN = 20.0  # seconds of two plain beats


@pytest.fixture(scope="module")
def world(
    services: Services, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    # A Redis of the module's own: the machine's numbered databases are shared with other
    # suites, whose workers would take this module's messages.
    private = PrivateRedis(tmp_path_factory.mktemp("redis"))
    name = create_database(services, template_database)
    timers_broker, app_broker = private.url, private.url.replace("/0", "/1")
    yield {
        "DATABASE_URL": services.database_url(name),
        "REDIS_URL": timers_broker,
        "TIMERS_TASK_BROKER_URL": app_broker,
        "TIMERS_CELERY_TASKS": "beatapp.*",
        "TIMERS_CELERY_QUEUES": "beatapp",
        "BEAT_APP_BROKER_URL": app_broker,
        "BEAT_APP_RUNS": str(tmp_path_factory.mktemp("beatapp") / "runs.jsonl"),
    }
    private.kill()
    drop_database(services, name)


def celery(name: str, env: dict[str, str], *argv: str) -> processes.Process:
    command = [str(processes.BIN / "celery"), "-A", "tests.support.beat_app", *argv]
    return processes.Process(name, [*command, "--loglevel=INFO"], env)


@pytest.fixture(scope="module")
def app_worker(world: dict[str, str]) -> Iterator[processes.Process]:
    proc = celery(
        "beatapp-worker",
        world,
        "worker",
        "-Q",
        "beatapp",
        "-n",
        f"beatapp-{uuid.uuid4().hex[:8]}@%h",
    )
    assert proc.wait_for_output("ready", 60), proc.output()
    yield proc
    proc.stop()


def occurrences(world: dict[str, str]) -> dict[str, tuple[str, datetime, str]]:
    """The timers the beat schedules made: id → (schedule name, slot, status)."""
    library = Timers(settings=settings_from_env(world))
    with library, library.store.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            text(
                "SELECT t.id, s.name, t.scheduled_for, t.status FROM timers t"
                " JOIN schedules s ON s.id = t.schedule_id"
            )
        ).all()
    return {str(r[0]): (r[1], r[2], r[3]) for r in rows}


def test_two_timers_beats_fire_each_slot_once(
    world: dict[str, str], app_worker: processes.Process, tmp_path: Path
) -> None:
    runs_file = Path(world["BEAT_APP_RUNS"])
    worker = processes.worker(world)
    scheduler = processes.scheduler(world)
    beats = [
        celery(f"beat-{k}", world, "beat", "-S", "timers.celery.BeatScheduler") for k in (1, 2)
    ]
    try:
        assert worker.wait_for_output("ready", 60), worker.output()
        assert scheduler.wait_for_output("scheduler started", 30), scheduler.output()
        for beat in beats:
            assert beat.wait_for_output("beat schedule synced", 60), beat.output()
        started = time.time()
        # Until just past the second minute boundary from now, within RUN_AT_MOST.
        second_boundary = (started // 60 + 2) * 60 + 3
        time.sleep(max(0.0, min(second_boundary, started + RUN_AT_MOST) - started))
        stopped = time.time()
    finally:
        for beat in beats:
            beat.stop()
        scheduler.stop()
    try:
        made = occurrences(world)
        fired = {i: o for i, o in made.items() if o[2] == "completed"}
        # Every task the timers sent ran (the worker drains what was published).
        assert wait_until(lambda: len(beat_app.runs(runs_file)) >= len(fired), 30), (
            len(fired),
            beat_app.runs(runs_file),
        )
    finally:
        worker.stop()
    runs = beat_app.runs(runs_file)
    outputs = "\n".join(b.output()[-3000:] for b in beats)
    # The beats sent nothing: every run is an occurrence, under its timer id, once.
    ids = [r["task_id"] for r in runs]
    assert len(ids) == len(set(ids)), "a task id ran twice"
    assert set(ids) == set(fired), outputs
    for entry in (beat_app.EVERY_2S, beat_app.EVERY_MINUTE):
        slots = sorted(o[1] for o in fired.values() if o[0] == f"beat:{entry}")
        assert len(slots) == len(set(slots)), f"{entry}: a slot fired twice"
        assert all(r["entry"] == entry for r in runs if made[r["task_id"]][0] == f"beat:{entry}")
        gaps = {(b - a).total_seconds() for a, b in zip(slots, slots[1:], strict=False)}
        if entry == beat_app.EVERY_2S:
            assert len(slots) >= 0.7 * (stopped - started) / 2, slots  # none missed
            assert gaps == {2.0}, gaps  # consecutive 2-second slots, none missed, none doubled
        else:
            assert slots, "no minute boundary fired"
            assert all(s.second == 0 for s in slots) and gaps <= {60.0}, slots


def test_two_plain_beats_fire_each_tick_twice(
    world: dict[str, str], app_worker: processes.Process, tmp_path: Path
) -> None:
    runs_file = Path(world["BEAT_APP_RUNS"])
    runs_file.unlink(missing_ok=True)
    beats = [
        celery(f"plain-beat-{k}", world, "beat", "-s", str(tmp_path / f"plain{k}")) for k in (1, 2)
    ]
    try:
        for beat in beats:
            assert beat.wait_for_output("beat: Starting", 30), beat.output()
        time.sleep(PLAIN_RUN)
    finally:
        for beat in beats:
            beat.stop()
    time.sleep(2)  # the worker drains
    runs = [r for r in beat_app.runs(runs_file) if r["entry"] == beat_app.EVERY_2S]
    assert len(runs) >= 4, runs
    span = runs[-1]["at"] - runs[0]["at"]
    slots = span / 2 + 1  # the 2-second ticks one beat makes in that span
    assert len(runs) >= 1.5 * slots, (len(runs), slots)
