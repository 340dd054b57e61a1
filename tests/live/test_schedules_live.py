"""Schedules with the real commands as subprocesses: two `timers api`, two `python -m
timers.scheduler` (one of them killed with SIGKILL and restarted), a `celery -A timers.celery_app
worker`, real PostgreSQL and Redis, and a real HTTP receiver on 127.0.0.1. Each schedule calls a
path of its own on the receiver, so its arrivals are told apart. Kills processes and takes
minutes: `make test-schedules-live` runs it, on a machine otherwise idle (under the fault suite's
load its timing-bound waits failed in one test of six, a different one each run)."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import Engine, text

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.receiver import Receiver, wait_until
from tests.support.services import API_KEY, LOCAL_NETWORKS, Services
from timers.embedded import free_port
from timers.store import database_engine

pytestmark = [pytest.mark.live, pytest.mark.timeout(420)]

FINAL = ("completed", "failed", "canceled")


@pytest.fixture(scope="module")
def live(services: Services, template_database: str) -> Iterator[dict[str, Any]]:
    """The processes, started once for the module: env, engine, receiver, two API URLs, and the
    schedulers (a list: a test may replace one it killed)."""
    name = create_database(services, template_database)
    broker = services.redis_database(11)
    redis.Redis.from_url(broker).flushdb()
    env = {
        "DATABASE_URL": services.database_url(name),
        "REDIS_URL": broker,
        "API_KEY": API_KEY,
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "TIMERS_CALLBACK_TIMEOUT": "2",
        "TIMERS_LOAD_INTERVAL": "10",
        "TIMERS_EXECUTE_INTERVAL": "0.1",
        "TIMERS_ENQUEUE_TIMEOUT": "3",
        "LOG_LEVEL": "INFO",
    }
    receiver = Receiver().start()
    engine = database_engine(env["DATABASE_URL"])
    started: list[processes.Process] = []
    try:
        worker = processes.worker(env)
        started.append(worker)
        apis = []
        for n in range(2):
            port = free_port()
            argv = [str(processes.BIN / "timers"), "api", "--host", "127.0.0.1"]
            api = processes.Process(f"api{n}", [*argv, "--port", str(port)], env)
            started.append(api)
            apis.append(f"http://127.0.0.1:{port}")
        schedulers = [processes.scheduler(env, f"scheduler{n}") for n in range(2)]
        started.extend(schedulers)
        assert worker.wait_for_output("ready", 60), worker.output()
        for proc in started[1:]:
            ready = (
                "Application startup complete"
                if proc.name.startswith("api")
                else "scheduler started"
            )
            assert proc.wait_for_output(ready, 30), proc.output()
        yield {
            "env": env,
            "engine": engine,
            "receiver": receiver,
            "apis": apis,
            "schedulers": schedulers,
        }
    finally:
        for proc in started:
            proc.stop()
        receiver.stop()
        engine.dispose()
        redis.Redis.from_url(broker).flushdb()
        drop_database(services, name)


def call(base: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = requests.request(
        method, base + path, headers={"X-API-Key": API_KEY}, timeout=10, **kwargs
    )
    assert response.status_code < 300, response.text
    return dict(response.json()["data"])


def create(live: dict[str, Any], tag: str, **fields: Any) -> str:
    hook = {"type": "http", "url": live["receiver"].url(f"/{tag}"), "payload": {"tag": tag}}
    body = {"callback_type": "http", "callback_config": hook, **fields}
    return str(call(live["apis"][0], "POST", "/schedules", json=body)["id"])


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def arrivals(live: dict[str, Any], tag: str) -> list[Any]:
    receiver: Receiver = live["receiver"]
    with receiver.lock:
        return [a for a in receiver.arrivals if a.path == f"/{tag}"]


def occurrences(engine: Engine, schedule_id: str) -> list[tuple[str, datetime, str]]:
    """(id, scheduled_for, status) of the schedule's occurrences, earliest slot first."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, scheduled_for, status FROM timers WHERE schedule_id = :id"
                " ORDER BY scheduled_for"
            ),
            {"id": uuid.UUID(schedule_id)},
        )
        return [(str(r[0]), r[1], r[2]) for r in rows]


def settled(live: dict[str, Any], schedule_id: str, timeout: float = 60) -> bool:
    """Wait until none of the schedule's occurrences is executing (delivered, or given up)."""
    engine = live["engine"]
    return wait_until(
        lambda: all(s != "executing" for _, _, s in occurrences(engine, schedule_id)), timeout
    )


def quiet(live: dict[str, Any], tag: str, seconds: float = 3.0) -> bool:
    """Whether no arrival for `tag` comes in the next `seconds`."""
    before = len(arrivals(live, tag))
    time.sleep(seconds)
    return len(arrivals(live, tag)) == before


def restart_killed(live: dict[str, Any], n: int) -> None:
    """SIGKILL scheduler `n` (no clean-up of any kind) and start a new one in its place."""
    killed: processes.Process = live["schedulers"][n]
    killed.signal(signal.SIGKILL)
    killed.popen.wait(10)
    killed.stop()
    fresh = processes.scheduler(live["env"], f"scheduler{n}")
    live["schedulers"][n] = fresh
    assert fresh.wait_for_output("scheduler started", 30), fresh.output()


def test_every_slot_fires_once_with_a_scheduler_killed_twice(live: dict[str, Any]) -> None:
    start = datetime.now(UTC) + timedelta(seconds=3)
    end = start + timedelta(seconds=70)
    sid = create(live, "killed", every=1, start_at=start.isoformat(), end_at=end.isoformat())
    # The other API process serves the same schedule.
    assert call(live["apis"][1], "GET", f"/schedules/{sid}")["id"] == sid
    for kill_at in (20, 45):
        time.sleep(max(0.0, (start + timedelta(seconds=kill_at) - datetime.now(UTC)).seconds))
        restart_killed(live, 0)
    # Wait for the end, then for every occurrence to be delivered (a claim lost with its
    # scheduler is recovered and fires).
    time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
    engine = live["engine"]
    # A lost claim is recovered once the callback queue looks idle: generous, under load.
    assert wait_until(lambda: all(s in FINAL for _, _, s in occurrences(engine, sid)), 150), (
        occurrences(engine, sid)
    )
    rows = occurrences(engine, sid)
    slots = [slot for _, slot, _ in rows]
    steps = {(b - a).total_seconds() for a, b in zip(slots, slots[1:], strict=False)}
    assert len(slots) >= 60 and steps == {1.0}, (len(slots), steps)
    assert {s for _, _, s in rows} == {"completed"}, [r for r in rows if r[2] != "completed"]
    got = [a.timer_id for a in arrivals(live, "killed")]
    assert sorted(got) == sorted(tid for tid, _, _ in rows)  # each one, once


def test_put_changes_the_period_live(live: dict[str, Any]) -> None:
    sid = create(
        live, "put", every=3600, start_at=at(2)
    )  # its first slot soon, the next in an hour
    assert wait_until(lambda: len(arrivals(live, "put")) == 1, 60)
    changed = call(live["apis"][1], "PUT", f"/schedules/{sid}", json={"every": 1})
    assert changed["every"] == 1
    # No process restarted: the next unfired slot is a second away now.
    assert wait_until(lambda: len(arrivals(live, "put")) >= 4, 60), arrivals(live, "put")
    slots = [slot for _, slot, s in occurrences(live["engine"], sid) if s == "completed"]
    assert {(b - a).total_seconds() for a, b in zip(slots[1:], slots[2:], strict=False)} == {1.0}
    call(live["apis"][0], "DELETE", f"/schedules/{sid}")


def test_pause_stops_arrivals_and_resume_brings_them_back(live: dict[str, Any]) -> None:
    sid = create(live, "pause", every=1)
    assert wait_until(lambda: len(arrivals(live, "pause")) >= 2, 60)
    assert call(live["apis"][1], "POST", f"/schedules/{sid}/pause")["state"] == "paused"
    assert settled(live, sid)
    assert quiet(live, "pause")
    paused = len(arrivals(live, "pause"))
    assert call(live["apis"][0], "POST", f"/schedules/{sid}/resume")["state"] == "active"
    assert wait_until(lambda: len(arrivals(live, "pause")) >= paused + 2, 60)
    call(live["apis"][0], "DELETE", f"/schedules/{sid}")


def test_delete_stops_arrivals(live: dict[str, Any]) -> None:
    sid = create(live, "delete", every=1)
    assert wait_until(lambda: len(arrivals(live, "delete")) >= 2, 60)
    call(live["apis"][1], "DELETE", f"/schedules/{sid}")
    assert settled(live, sid)
    assert quiet(live, "delete")
    assert {s for _, _, s in occurrences(live["engine"], sid)} <= {"completed", "canceled"}


def test_trigger_makes_one_extra_arrival_now(live: dict[str, Any]) -> None:
    sid = create(live, "trigger", every=3600, start_at=at(3600))
    call(live["apis"][1], "POST", f"/schedules/{sid}/trigger")
    assert wait_until(lambda: len(arrivals(live, "trigger")) >= 1, 60)
    assert quiet(live, "trigger", 2)
    assert len(arrivals(live, "trigger")) == 1
    call(live["apis"][0], "DELETE", f"/schedules/{sid}")


def test_nothing_arrives_after_end_at(live: dict[str, Any]) -> None:
    end = datetime.now(UTC) + timedelta(seconds=5)
    sid = create(live, "end", every=1, end_at=end.isoformat())
    assert wait_until(lambda: datetime.now(UTC) > end + timedelta(seconds=1), 10)
    # Every slot made is fired (a late one, under load, included); none is made after end_at.
    engine = live["engine"]
    assert wait_until(lambda: all(s in FINAL for _, _, s in occurrences(engine, sid)), 60)
    assert quiet(live, "end")
    rows = occurrences(engine, sid)
    assert rows and all(slot < end for _, slot, _ in rows), rows
    assert len(arrivals(live, "end")) == len(rows)
    assert call(live["apis"][1], "GET", f"/schedules/{sid}")["state"] == "ended"
