"""The fault-injection suite (`make test-faults`): real scheduler, worker and API processes against a
private PostgreSQL and Redis that each scenario may kill or stop, and a real receiver.

Each scenario schedules 1,000 timers due over about 20 s, injects one fault in the middle, waits for
the system to settle, then counts per timer: delivered once, more than once, never, and whether it
was left `pending`/`executing`. One table is printed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from tests.support import processes
from tests.support.private_services import PrivatePostgres, PrivateRedis
from tests.support.receiver import Receiver, wait_until
from tests.support.services import API_KEY, LOCAL_NETWORKS
from timers.embedded import free_port
from timers.migrations import upgrade
from timers.models import uuid7
from timers.schema import timers as timers_table
from timers.store import TimerStore, database_engine

# `make test-faults` runs two pytest-xdist workers: one takes the long PostgreSQL outage (mostly
# a wait), the other every other scenario, one after another.
pytestmark = [pytest.mark.faults, pytest.mark.timeout(420), pytest.mark.xdist_group("scenarios")]

COUNT = 1000
SPREAD = 20.0  # seconds over which the timers come due
LEAD = 3.0  # seconds from scheduling to the first due timer
RECOVERY_WINDOW = 5.0
SETTLE_TIMEOUT = 180.0
OUTAGE_AFTER_DELIVERY = 360.0  # longer than the 5 minutes a worker used to ride out

RUNNING: list[pytest.Item] = []  # the test running now (see reported_result)


@dataclass
class Result:
    scenario: str
    once: int = 0
    duplicates: int = 0
    lost: int = 0
    stuck: int = 0
    missed: int = 0
    in_flight_at_fault: int = 0
    settle_seconds: float = 0.0
    worker_restarts: int = 0  # by the supervisor, after the worker exited on its own
    max_claims: int = 0  # the most times one timer was claimed (attempts)
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One scenario's world: what the fault function may act on."""

    pg: PrivatePostgres
    redis: PrivateRedis
    env: dict[str, str]
    store: TimerStore
    worker: processes.Process
    scheduler: processes.Process
    api: processes.Process | None = None
    result: Result = field(default_factory=lambda: Result(""))
    retired: list[processes.Process] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    # When the fault itself ended, if earlier than the fault function's return (settle time
    # counts from here).
    fault_ended_at: float | None = None

    def supervise(self) -> None:
        """Restart a worker that exits on its own, as a process manager would (systemd,
        `restart: unless-stopped`); each restart is counted in the table."""
        while not self.stopping.wait(0.5):
            with self.lock:
                if self.worker.popen.poll() is not None:
                    self.result.worker_restarts += 1
                    self.retired.append(self.worker)
                    self.worker = processes.worker(self.env)

    def restart_scheduler(self, **env: str) -> None:
        self.retired.append(self.scheduler)
        self.scheduler = processes.scheduler({**self.env, **env})
        assert self.scheduler.wait_for_output("scheduler started", 30), self.scheduler.output()

    def kill_and_restart_worker(self) -> int:
        """SIGKILL the whole worker (its main process and every pool process, mid-delivery) and
        start a new one; returns how many deliveries the dead one had started and not recorded."""
        with self.lock:
            os.killpg(self.worker.popen.pid, signal.SIGKILL)
            self.fault_ended_at = time.monotonic()
            self.worker.popen.wait(10)
            stranded = self.in_flight()
            self.retired.append(self.worker)
            self.worker = processes.worker(self.env)
        assert self.worker.wait_for_output("ready", 60), self.worker.output()
        return stranded

    def in_flight(self) -> int:
        query = (
            select(func.count())
            .select_from(timers_table)
            .where(timers_table.c.status == "executing", timers_table.c.started_at.is_not(None))
        )
        with self.store.engine.begin() as conn:
            return int(conn.execute(query).scalar_one())


@pytest.fixture(autouse=True)
def reported_result(request: pytest.FixtureRequest) -> Iterator[None]:
    """The running test, so that its scenario's row of the table rides on the test's report
    (`user_properties`): the table is whole however many pytest-xdist workers ran them."""
    RUNNING[:] = [request.node]
    yield
    RUNNING.clear()


@pytest.fixture(scope="module")
def private() -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    # Not under pytest's private temp dir: PostgreSQL runs as another user and must reach it.
    root = Path(tempfile.mkdtemp(prefix="timers-faults-"))
    root.chmod(0o755)
    pg = PrivatePostgres(root)
    rd = PrivateRedis(root)
    try:
        yield pg, rd
    finally:
        rd.kill()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def results_table(results: list[Result]) -> str:
    lines = [
        "fault-injection results (1,000 timers per scenario)",
        f"{'scenario':<24}{'once':>6}{'dupes':>7}{'lost':>6}{'stuck':>7}{'missed':>8}"
        f"{'in flight':>11}{'settled in':>12}{'worker restarts':>17}{'max claims':>12}",
    ]
    for r in results:
        lines.append(
            f"{r.scenario:<24}{r.once:>6}{r.duplicates:>7}{r.lost:>6}{r.stuck:>7}{r.missed:>8}"
            f"{r.in_flight_at_fault:>11}{r.settle_seconds:>11.1f}s{r.worker_restarts:>17}"
            f"{r.max_claims:>12}"
        )
    return "\n".join(lines)


def schedule(store: TimerStore, url: str) -> datetime:
    """COUNT timers to `url`, the first due LEAD seconds from now, the last SPREAD seconds later."""
    first = datetime.now(UTC) + timedelta(seconds=LEAD)
    rows = [
        {
            "id": uuid7(),
            "execute_at": first + timedelta(seconds=SPREAD * i / COUNT),
            "callback_type": "http",
            "callback_config": {"type": "http", "url": url, "payload": {"i": i}},
            "status": "pending",
        }
        for i in range(COUNT)
    ]
    with store.engine.begin() as conn:
        conn.execute(timers_table.insert(), rows)
    return first


def statuses(store: TimerStore) -> dict[str, tuple[str, str, int]]:
    with store.engine.begin() as conn:
        rows = conn.execute(
            select(
                timers_table.c.id,
                timers_table.c.status,
                timers_table.c.last_error,
                timers_table.c.attempts,
            )
        )
        return {str(r.id): (r.status, r.last_error or "", r.attempts) for r in rows}


def run_scenario(
    name: str,
    fault: Callable[[Run], None],
    private: tuple[PrivatePostgres, PrivateRedis],
    receiver: Receiver,
    *,
    misfire_policy: str = "fire",
    with_api: bool = False,
    defaults: bool = False,
    path: str = "/fault",
) -> Result:
    """One scenario. With `defaults`, every process runs with the shipped settings (only the
    service URLs, the API key, the port and the receiver's network are given), as an operator
    would run them."""
    pg, rd = private
    database = f"faults_{name}"
    pg.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    pg.execute(f'CREATE DATABASE "{database}"')
    upgrade(pg.url(database))
    redis.Redis.from_url(rd.url).flushall()
    receiver.clear()
    env = {
        "DATABASE_URL": pg.url(database),
        "REDIS_URL": rd.url,
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "API_KEY": API_KEY,
        "PORT": str(free_port()),
        "TIMERS_LOAD_INTERVAL": "2",
        "TIMERS_EXECUTE_INTERVAL": "0.2",
        "TIMERS_RECOVERY_WINDOW": str(RECOVERY_WINDOW),
        "TIMERS_ENQUEUE_TIMEOUT": "5",
        "TIMERS_REDELIVERY_TIMEOUT": "60",
        "TIMERS_CALLBACK_TIMEOUT": "2",
        "TIMERS_MISFIRE_POLICY": misfire_policy,
    }
    if defaults:
        # The shipped settings; only what locates the services and lets callbacks reach the
        # receiver on this host is given.
        given = ("DATABASE_URL", "REDIS_URL", "API_KEY", "PORT", "TIMERS_ALLOWED_NETWORKS")
        env = {k: env[k] for k in given}
    engine = database_engine(pg.url(database))
    store = TimerStore(engine)
    worker = processes.worker(env)
    assert worker.wait_for_output("ready", 60), worker.output()
    scheduler = processes.scheduler(env)
    assert scheduler.wait_for_output("scheduler started", 30), scheduler.output()
    run = Run(pg, rd, env, store, worker, scheduler, result=Result(name))
    if with_api:
        run.api = processes.Process(
            "api", [str(processes.BIN / "timers"), "api", "--host", "127.0.0.1"], env
        )
        assert run.api.wait_for_output("Application startup complete", 30), run.api.output()
    supervisor = threading.Thread(target=run.supervise, daemon=True)
    supervisor.start()
    try:
        first = schedule(store, receiver.url(path))
        middle = first + timedelta(seconds=SPREAD / 2)
        time.sleep(max(0.0, (middle - datetime.now(UTC)).total_seconds()))
        fault(run)
        settle_start = run.fault_ended_at or time.monotonic()
        final = {"completed", "failed"}

        def settled() -> bool:
            try:
                return all(status in final for status, _, _ in statuses(store).values())
            except Exception:
                return False

        wait_until(settled, SETTLE_TIMEOUT, interval=0.5)
        run.result.settle_seconds = time.monotonic() - settle_start
        time.sleep(2)  # any late duplicate shows up
        counts = receiver.count_by_timer()
        for timer_id, (status, error, attempts) in statuses(store).items():
            delivered = counts.get(timer_id, 0)
            run.result.max_claims = max(run.result.max_claims, attempts)
            if status not in final:
                run.result.stuck += 1
            if delivered == 1:
                run.result.once += 1
            elif delivered > 1:
                run.result.duplicates += 1
            elif error.startswith("missed:"):
                run.result.missed += 1
            else:
                run.result.lost += 1
        for proc in [run.worker, run.scheduler, *([run.api] if run.api else [])]:
            assert proc.popen.poll() is None, f"{proc.name} died:\n{proc.output()[-3000:]}"
    finally:
        run.stopping.set()
        supervisor.join(5)
        for proc in [run.worker, run.scheduler, *run.retired, *([run.api] if run.api else [])]:
            proc.stop()
        engine.dispose()
    for item in RUNNING:  # on the call's report, which is made after the test returns
        item.user_properties.append(("fault_result", asdict(run.result)))
    return run.result


def assert_clean(result: Result, *, worker_may_exit: bool = False) -> None:
    assert result.lost == 0, result
    assert result.stuck == 0, result
    assert result.duplicates == 0, result
    if not worker_may_exit:
        assert result.worker_restarts == 0, result


def test_kill_9_scheduler_and_restart(private: Any, receiver: Receiver) -> None:
    def fault(run: Run) -> None:
        run.scheduler.signal(signal.SIGKILL)
        run.scheduler.popen.wait(10)
        time.sleep(1)
        run.restart_scheduler()

    result = run_scenario("kill-9-scheduler", fault, private, receiver)
    assert_clean(result)
    assert result.once == COUNT


def test_kill_9_worker_with_default_settings_settles_within_60s(
    private: Any, receiver: Receiver
) -> None:
    def fault(run: Run) -> None:
        run.result.in_flight_at_fault = run.kill_and_restart_worker()

    # Each callback takes 2 s, so a hundred or so are in flight at the kill.
    result = run_scenario("kill-9-worker", fault, private, receiver, defaults=True, path="/slow/2")
    assert result.lost == 0 and result.stuck == 0, result
    assert result.in_flight_at_fault > 0, result
    # At-least-once: only deliveries cut off by the kill may be made twice.
    assert result.duplicates <= result.in_flight_at_fault, result
    # Their leases lapse and the next load recovers them: within a lease plus a load period.
    assert result.settle_seconds <= 60, result


def test_restart_redis_losing_every_queued_message(private: Any, receiver: Receiver) -> None:
    def fault(run: Run) -> None:
        run.redis.kill()
        time.sleep(1)
        run.redis.start()

    result = run_scenario("restart-redis", fault, private, receiver)
    # Celery's Redis transport may give up (an "Unrecoverable error") when the broker vanishes
    # while it holds unacknowledged messages; the process manager restarts it.
    assert_clean(result, worker_may_exit=True)


@pytest.mark.timeout(900)
@pytest.mark.xdist_group("long-outage")
def test_postgres_down_6_minutes_right_after_a_delivery_sends_nothing_twice(
    private: Any,
) -> None:
    """The receiver stops PostgreSQL while it holds a request, then answers 200: that callback
    (and every other one in flight) was delivered, and its outcome can't be written for 6 minutes,
    longer than any lease. When the database is back the outcomes are recorded; nothing is sent
    again. Every process runs with the shipped settings."""
    pg = private[0]
    armed, stopped = threading.Event(), threading.Event()
    lock = threading.Lock()

    def stop_database_once(_: Any) -> None:
        with lock:
            if armed.is_set() and not stopped.is_set():
                pg.stop()
                stopped.set()

    receiver = Receiver(on_arrival=stop_database_once).start()

    def fault(run: Run) -> None:
        assert run.api is not None
        health = f"http://127.0.0.1:{run.env['PORT']}/health"
        armed.set()
        assert stopped.wait(30), "no callback arrived to stop the database on"
        try:
            try:
                urllib.request.urlopen(health, timeout=10)
                raise AssertionError("/health answered 200 while PostgreSQL was down")
            except urllib.error.HTTPError as exc:
                assert exc.code == 500
                assert json.load(exc)["data"]["status"] == "degraded"
            time.sleep(OUTAGE_AFTER_DELIVERY)
        finally:
            run.pg.start()
        with urllib.request.urlopen(health, timeout=10) as response:
            assert json.load(response)["data"]["status"] == "up"

    try:
        result = run_scenario(
            "stop-postgres-6min", fault, private, receiver, defaults=True, with_api=True
        )
    finally:
        receiver.stop()
    assert_clean(result)
    assert result.once == COUNT
    assert result.worker_restarts == 0, "the worker must ride out a database outage"


def test_broker_down_20s_while_timers_come_due(private: Any, receiver: Receiver) -> None:
    def fault(run: Run) -> None:
        run.redis.kill()
        time.sleep(20)
        run.redis.start()

    result = run_scenario("broker-down-20s", fault, private, receiver)
    assert_clean(result, worker_may_exit=True)
    # While the broker was down nothing was claimed and released tick after tick: a timer is
    # claimed once, maybe once more after a refused or lost message.
    assert result.max_claims <= 3, result


def test_sigterm_scheduler_and_restart(private: Any, receiver: Receiver) -> None:
    def fault(run: Run) -> None:
        run.scheduler.signal(signal.SIGTERM)
        assert run.scheduler.popen.wait(10) == 0
        run.restart_scheduler()

    result = run_scenario("sigterm-scheduler", fault, private, receiver)
    assert_clean(result)
    assert result.once == COUNT


@pytest.mark.parametrize("policy", ["fire", "skip"])
def test_scheduler_down_for_twice_the_recovery_window(
    private: Any, receiver: Receiver, policy: str
) -> None:
    def fault(run: Run) -> None:
        run.scheduler.signal(signal.SIGTERM)
        run.scheduler.popen.wait(10)
        time.sleep(2 * RECOVERY_WINDOW)
        run.restart_scheduler()

    result = run_scenario(
        f"scheduler-down-{policy}", fault, private, receiver, misfire_policy=policy
    )
    assert_clean(result)
    if policy == "fire":
        assert result.once == COUNT and result.missed == 0
    else:
        # Timers overdue beyond the window when the scheduler came back are failed as missed.
        assert result.missed > 0
        assert result.once + result.missed == COUNT
