"""`make bench` (python -m bench): the same workloads through three systems, on this machine, in one
run, against the same receiver on 127.0.0.1. Every worker runs as shipped: `celery -A <app>
worker` with no pool or concurrency flags, so celeryconfig.py decides (prefork, one process per CPU).

Systems:
  celery-eta  plain `apply_async(eta=…)` of a task doing a synchronous `requests.post` to the same
              URL with the same headers (bench/eta_app.py; no PostgreSQL)
  seed        our scheduler as the seed designed it (TIMERS_MODE=seed): 30 s loads, 1 s ticks,
              one UPDATE and one task per timer, no notifications or wake-ups
  timers      our scheduler with its defaults

Workloads: burst (5,000 due in the same second), isolation (2,000 timers to the healthy receiver
and 200 to 200 receivers that never answer, interleaved, all due within 5 s; measured on the
healthy 2,000 only), steady (500/s coming due for 60 s), short (200 timers each created 2 s before
due, while running), scale (steady with 1,000,000 pending rows over the next 30 days; timers
only), celery-tasks (2,000 delayed calls of a user's own Celery task, below; celery-eta and
timers only), flaky and signing (below; timers only); then idle (PostgreSQL statements of an idle scheduler for a minute) and rates (timer
creation through the API). Prints one table, with the ratios against celery-eta, and writes the
raw numbers as JSON. `--only isolation,burst` runs just those. Three more run only when named in
`--only`: page (keyset pages of `GET /timers` over 10,000,000 rows) and retention (steady load while
the scheduler deletes 5,000,000 finished rows, against the same load without), see
bench/operate.py; claim-size (the scheduler's claim of 50 timers of 60 KiB against 50 small
ones), see bench/claim_size.py.

celery-tasks: a user's Celery app (bench/user_app.py: its own broker, queue and worker, Redis's
visibility timeout 10 s, swept every 10 s) makes 2,000 calls `task.apply_async((n,), countdown=30)` from this
process; the task records its task id and the time it ran. celery-eta: plain eta messages, run by
`celery -A bench.user_app worker`. timers: the same calls after `timers.celery.durable_eta(app,
threshold=1)`, so each becomes a durable timer that the timers stack later publishes to the user's
broker (task id = timer id), run by the same user worker. Besides runs and lateness (run time
minus call time + 30 s), it reports the calls per second the caller makes in each system
(`calls/s`).

flaky: 2,000 timers due within 5 s, each with its own retry policy `{"max_attempts": 3, "backoff":
"fixed", "initial_delay": 1}`, to a receiver path that answers the first request of each timer 503
and later ones 200. Each timer should end `completed` with `delivery_attempts` 2 (checked in the
database, with its history: a 503 `retrying`, then a 200 `completed`). Its row's once/twice/never
and lateness are the second attempt's: its arrival minus the time the retry was due, which is the
timer's `execute_at` as the first attempt's outcome set it (PostgreSQL's now() + 1 s in the
transaction recording the 503; the completion leaves `execute_at` as it is, so it is read once
every timer has settled). The time from the first arrival to that transaction is not lateness (the
retry is planned from when the outcome is recorded); it is printed in a note with the first
attempt's lateness.

signing: the steady workload (500/s coming due, `--signing-seconds`, default 45 s) run twice, with
`TIMERS_SIGNING_SECRETS` unset (signing:off) and set to one fresh secret (`whsec_` + base64 of 32
random bytes) in the worker's environment (signing:on). Both rows report the worker's CPU seconds
(its processes, pool included, through psutil, during the measurement) and how many requests
carried a `webhook-signature` header; the ratio line compares p99 lateness and worker CPU.

Lateness is the receiver's arrival time minus `execute_at`. A timer that has not arrived when the
cell stops waiting counts as `never`; its lateness is then known only to exceed the time waited,
and a percentile that depends on such a timer is printed as a lower bound (`>`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import redis
import requests
from sqlalchemy import text

from bench import claim_size, operate
from bench.services import Services, find_services
from timers.embedded import free_port
from timers.migrations import upgrade
from timers.models import uuid7
from timers.schema import timers as timers_table
from timers.store import NewTimer, TimerStore, database_engine

API_KEY = "bench-api-key-0123456789abcdefghijklmn"  # keys are at least 32 characters
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Every worker as shipped: no --pool or --concurrency, so celeryconfig.py decides (prefork, one
# process per CPU). Only logging and the cluster chatter between workers are set here.
WORKER_ARGS = ["--loglevel=INFO", "--without-gossip", "--without-mingle"]
ALL_WORKLOADS = (
    "burst",
    "isolation",
    "steady",
    "short",
    "scale",
    "celery-tasks",
    "flaky",
    "signing",
)
EXTRAS = ("idle", "rates")
# Only when named in --only: each fills millions of rows first (bench/operate.py).
OPT_IN = ("page", "retention", "claim-size")


@dataclass
class Receiver:
    url: str
    proc: subprocess.Popen[bytes]
    out: Path

    def count(self) -> int:
        try:
            return int(self.out.with_suffix(".count").read_text() or 0)
        except (OSError, ValueError):
            return 0

    def collect(self) -> dict[str, list[float]]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        return dict(json.loads(self.out.read_text()))

    def stats(self) -> dict[str, int]:
        """After collect(): requests, 503s of the flaky path, requests with webhook-signature."""
        try:
            return dict(json.loads(self.out.with_suffix(".stats").read_text()))
        except (OSError, ValueError):
            return {}


@dataclass
class Cell:
    system: str
    workload: str
    # A workload run more than once per system (signing: "off", "on"); None otherwise.
    variant: str | None = None
    timers: int = 0
    once: int = 0
    twice: int = 0
    never: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    throughput: float = 0.0
    # Statistics ("p50", "p99", "max") that are only lower bounds: they depend on `never` timers.
    lower_bounds: list[str] = field(default_factory=list)
    pg_statements_per_min: float | None = None
    scheduler_cpu_s: float | None = None
    scheduler_peak_rss_mb: float | None = None
    # celery-tasks: delayed calls per second made by the caller (apply_async or the drop-in).
    calls_per_s: float | None = None
    # CPU seconds of the Celery worker's processes (main and pool) during the measurement.
    worker_cpu_s: float | None = None
    # flaky: timers `completed` with delivery_attempts == 2, and the others by
    # "status/delivery_attempts".
    as_expected: int | None = None
    other_outcomes: dict[str, int] | None = None
    # Requests that carried a webhook-signature header (Standard Webhooks).
    signed_requests: int | None = None
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, services: Services, workdir: Path, steady_seconds: float) -> None:
        self.services = services
        self.workdir = workdir
        # Numbered databases that no test uses (the tests take 2 to 15; test_nats.py 14 and 15):
        # a test's worker on the bench's broker takes the bench's tasks, which are then lost.
        self.broker = services.redis_database(1)
        # The user's own broker in the celery-tasks workload (bench/user_app.py).
        self.user_broker = services.redis_database(0)
        self.steady_seconds = steady_seconds
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- plumbing ----------------------------------------------------------------------------

    def database(self, name: str) -> str:
        self.services.admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.services.admin_execute(f'CREATE DATABASE "{name}"')
        url = self.services.database_url(name)
        upgrade(url)
        return url

    def spawn(
        self, argv: list[str], env: Mapping[str, str | None], name: str
    ) -> subprocess.Popen[bytes]:
        """Start `argv` with this environment plus `env` (a None value removes the variable)."""
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        merged: dict[str, str | None] = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={k: v for k, v in merged.items() if v is not None},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def wait_log(self, name: str, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        path = self.workdir / f"{name}.log"
        while time.monotonic() < deadline:
            if path.exists() and needle in path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not print {needle!r}; see {path}")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def receiver(self, tag: str, path: str = "bench") -> Receiver:
        port = free_port()
        out = self.workdir / f"arrivals-{tag}.json"
        proc = self.spawn(
            [sys.executable, "-m", "bench.receiver", str(port), str(out)], {}, f"receiver-{tag}"
        )
        self.wait_log(f"receiver-{tag}", "ready")
        return Receiver(f"http://127.0.0.1:{port}/{path}", proc, out)

    def hanging_receivers(self, tag: str, count: int, lifetime: float) -> tuple[list[str], Path]:
        """`count` receivers (distinct ports on 127.0.0.1) that accept and never answer, in one
        process that exits by itself after `lifetime` seconds. Returns their URLs and the file
        where the process keeps its count of accepted connections."""
        out = self.workdir / f"hang-{tag}.json"
        self.spawn(
            [sys.executable, "-m", "bench.hang", str(count), f"{lifetime:.0f}", str(out)],
            {},
            f"hang-{tag}",
        )
        self.wait_log(f"hang-{tag}", "ready")
        ports = json.loads(out.read_text())
        return [f"http://127.0.0.1:{port}/hang" for port in ports], out.with_suffix(".count")

    def env(self, database_url: str, system: str) -> dict[str, str]:
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": self.broker,
            "LOG_LEVEL": "WARNING",
            # The receivers are on loopback, which outbound callbacks may not reach by default.
            "TIMERS_ALLOWED_NETWORKS": "127.0.0.0/8",
        }
        if system == "seed":
            # The original polling design: no notifications or wake-ups, one UPDATE and one task
            # per timer.
            env["TIMERS_MODE"] = "seed"
        return env

    def start_worker(
        self, system: str, env: Mapping[str, str | None], tag: str
    ) -> subprocess.Popen[bytes]:
        app = "bench.eta_app" if system == "celery-eta" else "timers.celery_app"
        proc = self.spawn(
            [str(BIN / "celery"), "-A", app, "worker", *WORKER_ARGS, "-n", f"{tag}@%h"],
            env,
            f"worker-{tag}",
        )
        self.wait_log(f"worker-{tag}", " ready.", 60)
        return proc

    def start_user_worker(self, tag: str) -> None:
        """The user's own worker (bench/user_app.py) on its own broker and queue, as shipped."""
        self.spawn(
            [
                str(BIN / "celery"),
                "-A",
                "bench.user_app",
                "worker",
                *WORKER_ARGS,
                "-n",
                f"user-{tag}@%h",
            ],
            {"BENCH_USER_BROKER_URL": self.user_broker},
            f"user-worker-{tag}",
        )
        self.wait_log(f"user-worker-{tag}", " ready.", 60)

    def start_scheduler(self, env: Mapping[str, str | None], tag: str) -> subprocess.Popen[bytes]:
        proc = self.spawn(
            [sys.executable, "-m", "timers.scheduler"],
            {**env, "LOG_LEVEL": "INFO"},
            f"scheduler-{tag}",
        )
        self.wait_log(f"scheduler-{tag}", "scheduler started")
        return proc


def xacts(store: TimerStore, name: str) -> int:
    with store.engine.begin() as conn:
        return int(
            conn.execute(
                text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :n"),
                {"n": name},
            ).scalar_one()
        )


def summarize(
    cell: Cell, due: dict[str, float], arrivals: dict[str, list[float]], gave_up_at: float
) -> Cell:
    """Count once/twice/never and the lateness percentiles over every timer in `due`. A timer that
    never arrived is late by more than `gave_up_at - due` (unix time when the cell stopped
    waiting): it enters the percentiles with that lower bound, and a percentile at or above the
    rank of such a timer is marked as a lower bound in `cell.lower_bounds`."""
    late: list[tuple[float, bool]] = []  # (ms, only a lower bound)
    firsts = []
    for timer_id, at in due.items():
        got = sorted(arrivals.get(timer_id, []))
        if not got:
            cell.never += 1
            late.append((max(0.0, gave_up_at - at) * 1000, True))
            continue
        if len(got) == 1:
            cell.once += 1
        else:
            cell.twice += 1
        late.append(((got[0] - at) * 1000, False))
        firsts.append(got[0])
    cell.timers = len(due)
    if late:
        late.sort()

        def at_rank(index: int, name: str) -> float:
            # Exact unless a censored value sits at or below this rank (raising the censored
            # values to their true lateness could then move the percentile up).
            if any(censored for _, censored in late[: index + 1]):
                cell.lower_bounds.append(name)
            return late[index][0]

        cell.p50_ms = at_rank((len(late) - 1) // 2, "p50")
        if len(late) % 2 == 0 and "p50" not in cell.lower_bounds:
            cell.p50_ms = statistics.median(v for v, _ in late)
        cell.p99_ms = at_rank(min(len(late) - 1, int(len(late) * 0.99)), "p99")
        cell.max_ms = at_rank(len(late) - 1, "max")
    if firsts:
        span = max(firsts) - min(firsts)
        cell.throughput = len(firsts) / span if span > 0 else float(len(firsts))
    return cell


def wait_for(arrivals_expected: int, deadline: float, counter: Callable[[], int]) -> None:
    while time.monotonic() < deadline and counter() < arrivals_expected:
        time.sleep(0.5)


# -- workloads ---------------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    count: int
    spread: float  # seconds over which the timers come due
    live: bool = False  # created while running, each `live_lead` seconds before due
    live_lead: float = 2.0
    background_rows: int = 0
    # Timers to receivers that never answer, interleaved with the `count` measured ones (each to
    # a receiver of its own); only the `count` healthy timers are measured.
    hanging: int = 0
    # How long to wait for arrivals after the last due time (None: 20 s, 45 s for the seed).
    wait_after_due: float | None = None
    systems: tuple[str, ...] | None = None  # None: every system
    # The timers' own retry policy (the `retry` column); None: the server's default.
    retry: dict[str, Any] | None = None
    path: str = "bench"  # the receiver's path ("flaky": the first request of a timer gets 503)
    arrivals_per_timer: int = 1  # requests the receiver should see per timer
    # Runs per system: (variant, extra worker environment; a None value unsets the variable).
    variants: tuple[tuple[str, dict[str, str | None]], ...] = (("", {}),)
    count_signed: bool = False  # report the requests that carried webhook-signature


SIGNING_VARIABLE = "TIMERS_SIGNING_SECRETS"


def signing_secret() -> str:
    """A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def workloads(steady_seconds: float, signing_seconds: float = 45.0) -> list[Workload]:
    rate = 500
    return [
        Workload("burst", 5000, 1.0),
        # celery-eta's prefork processes sit on the hanging receivers (30 s each), so its healthy
        # timers queue behind them: wait 120 s after the last due time, then count the rest never.
        Workload("isolation", 2000, 5.0, hanging=200, wait_after_due=120.0),
        Workload("steady", int(rate * steady_seconds), steady_seconds),
        Workload("short", 200, 10.0, live=True),
        Workload(
            "scale",
            int(rate * steady_seconds),
            steady_seconds,
            background_rows=1_000_000,
            systems=("timers",),  # the 1,000,000-row table is about our scheduler's loader
        ),
        # 2,000 delayed calls of a user's task, each due 30 s after it is made (run_celery_tasks).
        Workload(
            "celery-tasks",
            2000,
            0.0,
            wait_after_due=60.0,
            systems=("celery-eta", "timers"),  # the drop-in is about Celery's own eta
        ),
        # Every timer's first attempt gets a 503, its second (1 s later, fixed backoff) a 200.
        Workload(
            "flaky",
            2000,
            5.0,
            wait_after_due=30.0,
            systems=("timers",),  # retries are ours
            retry={"max_attempts": 3, "backoff": "fixed", "initial_delay": 1},
            path="flaky",
            arrivals_per_timer=2,
        ),
        # steady, unsigned and signed: what signing costs the worker.
        Workload(
            "signing",
            int(rate * signing_seconds),
            signing_seconds,
            systems=("timers",),
            variants=(
                ("off", {SIGNING_VARIABLE: None}),
                ("on", {SIGNING_VARIABLE: signing_secret()}),
            ),
            count_signed=True,
        ),
    ]


def interleave(
    t0: datetime, wl: Workload, hanging_urls: list[str], healthy_url: str
) -> list[tuple[uuid.UUID, datetime, str]]:
    """(id, due, url) for the workload's timers, spread evenly over `wl.spread` seconds from `t0`;
    the hanging ones (if any) evenly among the healthy ones, one per hanging receiver."""
    total = wl.count + wl.hanging
    every = total // wl.hanging if wl.hanging else 0
    plan = []
    hanging_left = list(hanging_urls)
    for i in range(total):
        at = t0 + timedelta(seconds=wl.spread * i / total)
        healthy = not (every and i % every == every - 1 and hanging_left)
        plan.append((uuid7(), at, healthy_url if healthy else hanging_left.pop(0)))
    assert not hanging_left and len(plan) == total
    return plan


def callback_config(url: str) -> dict[str, Any]:
    return {"type": "http", "url": url, "payload": {"bench": True}}


def insert_timers(
    store: TimerStore,
    plan: list[tuple[uuid.UUID, datetime, str]],
    retry: Mapping[str, Any] | None = None,
) -> None:
    rows = [
        {
            "id": tid,
            "execute_at": at,
            "callback_type": "http",
            "status": "pending",
            "callback_config": callback_config(url),
            # Only when given: a Python None would be stored as JSON null, not SQL NULL.
            **({"retry": dict(retry)} if retry is not None else {}),
        }
        for tid, at, url in plan
    ]
    with store.engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(timers_table.insert(), rows[i : i + 5000])


def fill_background(store: TimerStore, rows: int) -> None:
    """`rows` pending timers spread over the next 30 days (not due during the run)."""
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE timers DISABLE TRIGGER timers_notify_change"))
        conn.execute(
            text(
                "INSERT INTO timers (id, execute_at, callback_type, callback_config, status) "
                "SELECT gen_random_uuid(), now() + interval '1 hour' + random() * interval '30 days', "
                '\'http\', \'{"type": "http", "url": "http://127.0.0.1:9/"}\', \'pending\' '
                "FROM generate_series(1, :n)"
            ),
            {"n": rows},
        )
        conn.execute(text("ALTER TABLE timers ENABLE TRIGGER timers_notify_change"))
    with store.engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE timers"))


def loader_query_plan(store: TimerStore) -> tuple[float, int, bool]:
    """EXPLAIN ANALYZE of the scheduler's own loader query as the `fire` policy runs it (no lower
    bound): (execution ms, rows, whether the partial index serves it)."""
    from sqlalchemy.dialects import postgresql

    from timers.store import near_term_query

    query = near_term_query(None, datetime.now(UTC) + timedelta(seconds=60), 100_000)
    sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with store.engine.connect() as conn:
        plan = [r[0] for r in conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))]
    ms = next(float(line.split(":")[1].split()[0]) for line in plan if "Execution Time" in line)
    rows = next(
        int(line.split("actual time=")[1].split("rows=")[1].split()[0])
        for line in plan
        if "actual time=" in line
    )
    return ms, rows, any("ix_timers_pending_execute_at" in line for line in plan)


def run_cell(
    bench: Bench,
    system: str,
    wl: Workload,
    variant: str = "",
    worker_env: Mapping[str, str | None] | None = None,
) -> Cell:
    tag = f"{system}-{wl.name}" + (f"-{variant}" if variant else "")
    cell = Cell(system, wl.name, variant=variant or None)
    receiver = bench.receiver(tag, wl.path)
    redis.Redis.from_url(bench.broker).flushdb()
    db_name = f"bench_{system.replace('-', '_')}_{wl.name}" + (f"_{variant}" if variant else "")
    url = bench.database(db_name)
    store = TimerStore(database_engine(url))
    env = bench.env(url, system)
    due: dict[str, float] = {}
    scheduler = None
    hang_count: Path | None = None
    hanging_urls: list[str] = []
    gave_up_at = time.time()
    wait_after_due = wl.wait_after_due or (45.0 if system == "seed" else 20.0)
    eta_app = None
    settled: dict[str, Settled] = {}
    try:
        if wl.hanging:
            # Lives through the lead, the due window and the wait, then exits by itself.
            lifetime = 60 + wl.spread + wait_after_due + 60
            hanging_urls, hang_count = bench.hanging_receivers(tag, wl.hanging, lifetime)
        if wl.background_rows:
            started = time.monotonic()
            fill_background(store, wl.background_rows)
            cell.notes.append(
                f"{wl.background_rows:,} background rows inserted in "
                f"{time.monotonic() - started:.0f}s"
            )
        worker = bench.start_worker(system, {**env, **(worker_env or {})}, tag)
        if worker_env:
            cell.notes.append(worker_environment(worker, worker_env))
        if system == "celery-eta":
            from bench.eta_app import create_app

            eta_app = create_app(bench.broker)
        lead = 4.0 + (wl.count + wl.hanging) / 1500
        t0 = datetime.now(UTC) + timedelta(seconds=lead)
        plan = interleave(t0, wl, hanging_urls, receiver.url)
        config = callback_config(receiver.url)
        if not wl.live:
            if eta_app is not None:
                with eta_app.producer_or_acquire() as producer:
                    for tid, at, target in plan:
                        eta_app.send_task(
                            "bench.post",
                            args=[str(tid), callback_config(target)],
                            eta=at,
                            producer=producer,
                        )
            else:
                insert_timers(store, plan, wl.retry)
                # Fresh statistics now, not an autovacuum pass in the middle of the measurement.
                with store.engine.connect() as conn:
                    conn.execute(text("VACUUM ANALYZE timers"))
                if wl.background_rows:
                    ms, rows, uses_index = loader_query_plan(store)
                    cell.notes.append(
                        f"loader query with {wl.background_rows + wl.count:,} pending rows: "
                        f"{ms:.1f} ms for {rows:,} rows, partial index "
                        f"{'used' if uses_index else 'NOT used'}"
                    )
            # Only the timers to the healthy receiver are measured.
            due = {str(tid): at.timestamp() for tid, at, target in plan if target == receiver.url}
        if system != "celery-eta":
            scheduler = bench.start_scheduler(env, tag)
        before = xacts(store, db_name)
        measure_start = time.monotonic()
        worker_cpu_before = tree_cpu(worker)
        if wl.live:
            # Each timer is created live_lead seconds before it is due, while everything runs.
            start = time.monotonic()
            for i in range(wl.count):
                wait = start + wl.spread * i / wl.count - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                at = datetime.now(UTC) + timedelta(seconds=wl.live_lead)
                if eta_app is not None:
                    tid = uuid7()
                    eta_app.send_task("bench.post", args=[str(tid), config], eta=at)
                else:
                    tid = store.create(
                        NewTimer(execute_at=at, callback_type="http", callback_config=config)
                    ).id
                due[str(tid)] = at.timestamp()
        last_due = max(due.values())
        deadline = time.monotonic() + max(0.0, last_due - time.time()) + wait_after_due
        expected = len(due) * wl.arrivals_per_timer
        while time.monotonic() < deadline and receiver.count() < expected:
            time.sleep(0.25)
        gave_up_at = time.time()
        cell.worker_cpu_s = tree_cpu(worker) - worker_cpu_before
        if wl.hanging:
            cell.notes.append(
                f"healthy timers only; {wl.hanging} timers to {wl.hanging} never-answering "
                "receivers interleaved ({hung} connections to them accepted)"
            )
        if receiver.count() < expected:
            cell.notes.append(
                f"stopped waiting {wait_after_due:.0f}s after the last due time; "
                "timers not arrived by then count as never"
            )
        elapsed_min = (time.monotonic() - measure_start) / 60
        if system != "celery-eta":
            cell.pg_statements_per_min = (xacts(store, db_name) - before) / elapsed_min
        if scheduler is not None:
            scheduler_usage(cell, scheduler)
        time.sleep(1.0)
        if wl.retry is not None:
            settled = settle(store, due.keys(), 15.0)
        # Read after the pause: the hanging receivers refresh their count every 0.5 s.
        cell.notes = [note.replace("{hung}", str(read_count(hang_count))) for note in cell.notes]
    finally:
        arrivals = receiver.collect()
        bench.stop_all()
        store.engine.dispose()
        if eta_app is not None:
            eta_app.close()
    strangers = foreign_workers(bench, tag)
    if strangers:
        cell.notes.append(
            f"ANOTHER Celery worker used this broker during the cell ({', '.join(strangers)}): "
            "one on the same queue takes tasks of this cell (see never and recovered), and a "
            "test suite running alongside takes CPU: do not trust this row"
        )
    recovered = scheduler_log(bench, tag, "Recovered timer")
    if recovered:
        cell.notes.append(
            f"the scheduler recovered {len(recovered):,} timers and fired them again (e.g. "
            f"{recovered[0][1]}): tasks lost between scheduler and worker"
        )
    stats = receiver.stats()
    if wl.count_signed:
        cell.signed_requests = stats.get("signed", 0)
        cell.notes.append(
            f"{cell.signed_requests:,} of {stats.get('requests', 0):,} requests carried "
            "webhook-signature"
        )
    if wl.retry is not None:
        cell.notes.append(f"receiver answered {stats.get('rejected', 0):,} first requests 503")
        spawned: dict[str, list[float]] = {}
        for when, line in scheduler_log(bench, tag, "Spawned callback for timer "):
            spawned.setdefault(line.rsplit(" ", 1)[-1], []).append(when)
        return summarize_retries(cell, due, arrivals, settled, gave_up_at, spawned)
    return summarize(cell, due, arrivals, gave_up_at)


def foreign_workers(bench: Bench, tag: str) -> list[str]:
    """Workers not started by this cell that announced themselves to its worker (`sync with`)."""
    path = bench.workdir / f"worker-{tag}.log"
    if not path.exists():
        return []
    names = {
        line.split("sync with ", 1)[1].strip()
        for line in path.read_text(errors="replace").splitlines()
        if "sync with " in line
    }
    return sorted(names)


def scheduler_log(bench: Bench, tag: str, needle: str) -> list[tuple[float, str]]:
    """(unix time, line) of the scheduler's log lines (at INFO) that contain `needle`."""
    path = bench.workdir / f"scheduler-{tag}.log"
    found = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if needle in line:
                try:
                    at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone()
                except ValueError:
                    continue
                found.append((at.timestamp(), line))
    return found


def worker_environment(worker: subprocess.Popen[bytes], extra: Mapping[str, str | None]) -> str:
    """What the worker's environment holds of `extra`, read back from the process (values
    hidden): set as given, or unset as asked."""
    seen = psutil.Process(worker.pid).environ()
    parts = []
    for name, value in extra.items():
        if value is None:
            parts.append(f"{name} unset" + ("" if name not in seen else " (BUT SET)"))
        else:
            kept = "" if seen.get(name) == value else " (BUT NOT AS GIVEN)"
            parts.append(f"{name} set ({value[:6]}…, {len(value)} chars){kept}")
    return "worker environment: " + ", ".join(parts)


def tree_cpu(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds (user + system) of a process and its descendants so far, those it has reaped
    included."""
    try:
        root = psutil.Process(proc.pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                ct = child.cpu_times()
                total += ct.user + ct.system
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


@dataclass
class Settled:
    """A timer's row once it has settled: status, delivery attempts, `execute_at` (unix time) and
    its attempt history."""

    status: str
    delivery_attempts: int
    execute_at: float
    history: list[dict[str, Any]]


def settle(store: TimerStore, ids: Iterable[str], timeout: float) -> dict[str, Settled]:
    """The rows of `ids`, read once none is `pending` or `executing` any more (a retry still
    waiting, an attempt not yet recorded), or after `timeout` seconds as they are then."""
    wanted = [uuid.UUID(i) for i in ids]
    query = text(
        "SELECT id, status, delivery_attempts, extract(epoch FROM execute_at) AS at, history "
        "FROM timers WHERE id = ANY(:ids)"
    )
    deadline = time.monotonic() + timeout
    while True:
        with store.engine.connect() as conn:
            rows = conn.execute(query, {"ids": wanted}).all()
        busy = sum(1 for r in rows if r.status in ("pending", "executing"))
        if not busy or time.monotonic() >= deadline:
            return {
                str(r.id): Settled(r.status, r.delivery_attempts, float(r.at), list(r.history))
                for r in rows
            }
        time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    """The same rank rule as summarize (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def summarize_retries(
    cell: Cell,
    due: dict[str, float],
    arrivals: dict[str, list[float]],
    settled: dict[str, Settled],
    gave_up_at: float,
    spawned: Mapping[str, list[float]] | None = None,
) -> Cell:
    """flaky: the database check (status `completed` and delivery_attempts 2, with a history of a
    503 `retrying` then a 200 `completed`), and once/twice/never and the lateness of the second
    attempt: its arrival minus the retry's due time, the `execute_at` the first attempt's outcome
    set (now() + 1 s when the 503 was recorded; the completion keeps it). A timer whose retry
    never arrived counts as never, late by at least the time waited after that due time.
    `spawned`: when the scheduler handed each timer's attempts to the broker (its log), to tell
    the scheduler's part of the 2nd attempt's lateness from the worker's."""
    retry_due = {
        tid: (settled[tid].execute_at if tid in settled else at) for tid, at in due.items()
    }
    later = {tid: sorted(arrivals.get(tid, []))[1:] for tid in due}
    summarize(cell, retry_due, later, gave_up_at)
    other: Counter[str] = Counter()
    history_odd = 0
    for tid in due:
        row = settled.get(tid)
        if row is None:
            other["missing"] += 1
            continue
        if row.status == "completed" and row.delivery_attempts == 2:
            shape = [(h.get("outcome"), h.get("status")) for h in row.history]
            if shape != [("retrying", 503), ("completed", 200)]:
                history_odd += 1
        else:
            other[f"{row.status}/{row.delivery_attempts}"] += 1
    cell.as_expected = len(due) - sum(other.values())
    cell.other_outcomes = dict(other)
    first = summarize(
        Cell(cell.system, cell.workload),
        due,
        {tid: sorted(arrivals.get(tid, []))[:1] for tid in due},
        gave_up_at,
    )
    # From the first arrival to the transaction that recorded its 503 (execute_at - 1 s), and
    # from the first arrival to the second.
    recorded = []
    gaps = []
    for tid in due:
        got = sorted(arrivals.get(tid, []))
        if tid in settled and len(got) >= 2:
            recorded.append((settled[tid].execute_at - 1.0 - got[0]) * 1000)
            gaps.append((got[1] - got[0]) * 1000)
    others = ", ".join(f"{n} {k}" for k, n in sorted(other.items())) or "none"
    cell.notes.extend(
        [
            f"database: {cell.as_expected:,} of {len(due):,} completed with delivery_attempts 2 "
            f"(history 503 then 200: {cell.as_expected - history_odd:,}); others: {others}",
            "once/twice/never and lateness: the 2nd attempt, arrival minus the execute_at the "
            "1st attempt's outcome set (now() + 1 s when the 503 was recorded)",
            f"1st attempt lateness p50/p99 {first.p50_ms:.0f}/{first.p99_ms:.0f} ms; its 503 "
            f"recorded p50/p99 {percentile(recorded, 0.5):.0f}/{percentile(recorded, 0.99):.0f} "
            f"ms after it arrived; 1st to 2nd arrival p50/p99 {percentile(gaps, 0.5):.0f}/"
            f"{percentile(gaps, 0.99):.0f} ms",
        ]
    )
    fired = [
        (spawned[tid][-1] - retry_due[tid]) * 1000
        for tid in due
        if spawned and len(spawned.get(tid, [])) >= 2
    ]
    if fired:
        cell.notes.append(
            f"scheduler enqueued the 2nd attempt p50/p99 {percentile(fired, 0.5):.0f}/"
            f"{percentile(fired, 0.99):.0f} ms after due (its log, ms resolution; the rest of "
            "the lateness is broker and worker)"
        )
    return cell


COUNTDOWN = 30.0  # celery-tasks: each call's countdown
# celery-tasks: once every task has run, how long after the last due time to go on watching for
# second runs (two visibility timeouts; bounded by the workload's wait_after_due).
SETTLE = 20.0


def run_celery_tasks(bench: Bench, system: str, wl: Workload) -> Cell:
    """The celery-tasks workload: `wl.count` calls `task.apply_async((n,), countdown=30)` from this
    process through the user's own Celery app (bench/user_app.py), plain (celery-eta) or after
    `timers.celery.durable_eta(app, threshold=1)` (timers), timed; then wait for the user's worker
    to run them, at most `wl.wait_after_due` seconds after the last due time, and go on watching
    for second runs until SETTLE seconds after it. Runs are counted per task id; lateness is the
    run's time minus the call's start time plus the countdown."""
    import timers.celery
    from bench import user_app
    from timers.config import settings_from_env
    from timers.library import Timers

    tag = f"{system}-{wl.name}"
    cell = Cell(system, wl.name)
    redis.Redis.from_url(bench.user_broker).flushdb()
    redis.Redis.from_url(bench.broker).flushdb()
    due: dict[str, float] = {}
    runs: list[dict[str, Any]] = []
    scheduler = None
    store = None
    library = None
    db_name = f"bench_{system.replace('-', '_')}_{wl.name.replace('-', '_')}"
    app = user_app.create_app(bench.user_broker)
    gave_up_at = time.time()
    try:
        bench.start_user_worker(tag)
        if system != "celery-eta":
            url = bench.database(db_name)
            store = TimerStore(database_engine(url))
            env = {
                **bench.env(url, system),
                # `celery` callbacks may reach the user's app: its broker, its task, its queue.
                "TIMERS_TASK_BROKER_URL": bench.user_broker,
                "TIMERS_CELERY_TASKS": user_app.TASK,
                "TIMERS_CELERY_QUEUES": user_app.QUEUE,
            }
            bench.start_worker(system, env, tag)
            scheduler = bench.start_scheduler(env, tag)
            library = Timers(settings=settings_from_env(env))
            timers.celery.durable_eta(app, threshold=1, timers=library)
        task = app.tasks[user_app.TASK]
        started = time.perf_counter()
        for n in range(wl.count):
            called_at = time.time()
            result = task.apply_async((n,), countdown=COUNTDOWN)
            due[str(result.id)] = called_at + COUNTDOWN
        cell.calls_per_s = wl.count / (time.perf_counter() - started)
        before = xacts(store, db_name) if store is not None else 0
        measure_start = time.monotonic()
        last_due = max(due.values())
        wait_after_due = wl.wait_after_due or 60.0
        deadline = time.monotonic() + max(0.0, last_due - time.time()) + wait_after_due
        settle_until = time.monotonic() + max(0.0, last_due - time.time()) + SETTLE
        while time.monotonic() < deadline:
            runs = user_app.runs(bench.user_broker)
            if len({run["id"] for run in runs} & due.keys()) >= len(due):
                break
            time.sleep(0.5)
        gave_up_at = time.time()
        # Second runs come at about the same time as the first ones (each copy of a redelivered
        # eta message waits for the same eta), or later (a redelivery): keep watching a while.
        while time.monotonic() < min(deadline, settle_until):
            time.sleep(0.5)
        runs = user_app.runs(bench.user_broker)
        if len({run["id"] for run in runs} & due.keys()) < len(due):
            cell.notes.append(
                f"stopped waiting {wait_after_due:.0f}s after the last due time; "
                "tasks not run by then count as never"
            )
        if store is not None:
            elapsed_min = (time.monotonic() - measure_start) / 60
            cell.pg_statements_per_min = (xacts(store, db_name) - before) / elapsed_min
        if scheduler is not None:
            scheduler_usage(cell, scheduler)
    finally:
        bench.stop_all()
        app.close()
        if library is not None:
            library.close()
        if store is not None:
            store.engine.dispose()
    arrivals: dict[str, list[float]] = {}
    for run in runs:
        arrivals.setdefault(str(run["id"]), []).append(float(run["at"]))
    strangers = len(arrivals.keys() - due.keys())
    if strangers:
        cell.notes.append(f"{strangers} runs under task ids that no call returned")
    cell.notes.append(
        f"{wl.count} calls apply_async(countdown={COUNTDOWN:.0f}) "
        + ("through timers.celery.durable_eta" if system == "timers" else "plain")
        + f": {cell.calls_per_s:,.0f} calls/s; user app visibility_timeout "
        f"{user_app.VISIBILITY_TIMEOUT}s, restore sweep every 10 s"
    )
    return summarize(cell, due, arrivals, gave_up_at)


def scheduler_usage(cell: Cell, scheduler: subprocess.Popen[bytes]) -> None:
    """The scheduler's CPU time so far and its peak resident memory, into `cell`."""
    cpu = psutil.Process(scheduler.pid).cpu_times()
    cell.scheduler_cpu_s = cpu.user + cpu.system
    hwm = [
        line
        for line in Path(f"/proc/{scheduler.pid}/status").read_text().splitlines()
        if line.startswith("VmHWM")
    ]
    cell.scheduler_peak_rss_mb = int(hwm[0].split()[1]) / 1024 if hwm else None


def read_count(path: Path | None) -> int:
    try:
        return int(path.read_text() or 0) if path else 0
    except (OSError, ValueError):
        return 0


def idle_statements(bench: Bench, system: str, seconds: float) -> float:
    """Statements per minute the scheduler sends to PostgreSQL while nothing is due, counted by a
    proxy between the two (after a few seconds for the start-up loads)."""
    from sqlalchemy.engine import make_url

    from bench.pgproxy import StatementCounter

    db_name = f"bench_{system.replace('-', '_')}_idle"
    url = make_url(bench.database(db_name))
    socket_dir = url.query.get("host")
    if socket_dir:  # the embedded server listens on a Unix socket
        target: tuple[str, int] | str = f"{socket_dir}/.s.PGSQL.{url.port or 5432}"
    else:
        target = (url.host or "127.0.0.1", url.port or 5432)
    proxy = StatementCounter(target)
    proxied = (
        f"postgresql://{url.username}@127.0.0.1:{proxy.port}/{db_name}"
        "?sslmode=disable&gssencmode=disable"
    )
    try:
        bench.start_scheduler(bench.env(proxied, system), f"{system}-idle")
        time.sleep(5)
        before = proxy.statements
        time.sleep(seconds)
        after = proxy.statements
    finally:
        bench.stop_all()
        proxy.close()
    return (after - before) * 60 / seconds


def start_api(bench: Bench, url: str, tag: str) -> str:
    """`timers api` on a free loopback port over the database at `url`, as shipped but logging
    only warnings; returns its base URL once it answers /health."""
    port = free_port()
    bench.spawn(
        [str(BIN / "timers"), "api", "--host", "127.0.0.1", "--port", str(port)],
        {
            "DATABASE_URL": url,
            "API_KEY": API_KEY,
            "TIMERS_ALLOWED_NETWORKS": "127.0.0.0/8",
            "LOG_LEVEL": "WARNING",
        },
        tag,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                return base
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not answer /health; see {bench.workdir / f'{tag}.log'}")


def creation_rates(bench: Bench, seconds: float) -> dict[str, float]:
    """Timers created per second through the real API: single POSTs and 1,000-timer batches."""
    base = start_api(bench, bench.database("bench_api"), "api")
    body = {
        "execute_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "callback_type": "http",
        "callback_config": {"type": "http", "url": "http://127.0.0.1:9/", "payload": {"n": 1}},
    }

    def hammer(path: str, payload: dict[str, Any], per_request: int, threads: int) -> float:
        created = [0] * threads
        stop_at = time.monotonic() + seconds

        def client(i: int) -> None:
            session = requests.Session()
            session.headers["X-API-Key"] = API_KEY
            while time.monotonic() < stop_at:
                if session.post(base + path, json=payload, timeout=30).status_code == 201:
                    created[i] += per_request

        started = time.monotonic()
        workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(created) / (time.monotonic() - started)

    try:
        single = hammer("/timers", body, 1, 8)
        batch = hammer("/timers/batch", {"timers": [body] * 1000}, 1000, 4)
    finally:
        bench.stop_all()
    return {"post_timers_per_s": single, "post_batch_timers_per_s": batch}


def ratios(cells: list[Cell]) -> list[dict[str, Any]]:
    """timers against celery-eta in this run: throughput for burst, p99 lateness for isolation,
    the caller's calls per second for celery-tasks, with the targets they are held to; and signed
    against unsigned (signing): p99 lateness and worker CPU."""
    by = {(c.workload, c.system): c for c in cells if c.variant is None}
    out: list[dict[str, Any]] = []
    burst_t, burst_e = by.get(("burst", "timers")), by.get(("burst", "celery-eta"))
    if burst_t and burst_e and burst_e.throughput > 0:
        ratio = burst_t.throughput / burst_e.throughput
        out.append(
            {
                "workload": "burst",
                "what": "throughput timers/celery-eta",
                "timers": burst_t.throughput,
                "celery_eta": burst_e.throughput,
                "ratio": ratio,
                "lower_bound": False,
                "text": (
                    f"burst throughput timers/celery-eta: {ratio:.2f}x "
                    f"({burst_t.throughput:.0f} vs {burst_e.throughput:.0f} cb/s)"
                ),
            }
        )
    iso_t, iso_e = by.get(("isolation", "timers")), by.get(("isolation", "celery-eta"))
    if iso_t and iso_e and iso_t.p99_ms > 0:
        ratio = iso_e.p99_ms / iso_t.p99_ms
        bound = "p99" in iso_e.lower_bounds and "p99" not in iso_t.lower_bounds
        gt = ">" if bound else ""
        out.append(
            {
                "workload": "isolation",
                "what": "p99 lateness celery-eta/timers",
                "timers": iso_t.p99_ms,
                "celery_eta": iso_e.p99_ms,
                "ratio": ratio,
                "lower_bound": bound,
                "text": (
                    f"isolation p99 lateness celery-eta/timers: {gt}{ratio:,.0f}x "
                    f"(timers {iso_t.p99_ms:.0f} ms vs celery-eta {gt}{iso_e.p99_ms:.0f} ms; "
                    f"timers/celery-eta {'<' if bound else ''}{1 / ratio:.4f})"
                ),
            }
        )
    calls_t, calls_e = by.get(("celery-tasks", "timers")), by.get(("celery-tasks", "celery-eta"))
    if calls_t and calls_e and calls_t.calls_per_s and calls_e.calls_per_s:
        ratio = calls_t.calls_per_s / calls_e.calls_per_s
        out.append(
            {
                "workload": "celery-tasks",
                "what": "calls/s timers/celery-eta",
                "timers": calls_t.calls_per_s,
                "celery_eta": calls_e.calls_per_s,
                "ratio": ratio,
                "lower_bound": False,
                "text": (
                    f"celery-tasks calls/s ratio timers/celery-eta (durable_eta vs plain "
                    f"apply_async): {ratio:.2f} ({calls_t.calls_per_s:,.0f} vs "
                    f"{calls_e.calls_per_s:,.0f} calls/s)"
                ),
            }
        )
    variants = {(c.workload, c.system, c.variant): c for c in cells if c.variant is not None}
    off, on = variants.get(("signing", "timers", "off")), variants.get(("signing", "timers", "on"))
    if off and on and off.p99_ms > 0 and off.worker_cpu_s:
        p99 = on.p99_ms / off.p99_ms
        cpu = (on.worker_cpu_s or 0.0) / off.worker_cpu_s
        bound = "p99" in on.lower_bounds or "p99" in off.lower_bounds
        out.append(
            {
                "workload": "signing",
                "what": "signed/unsigned p99 lateness and worker CPU",
                "unsigned": {"p99_ms": off.p99_ms, "worker_cpu_s": off.worker_cpu_s},
                "signed": {"p99_ms": on.p99_ms, "worker_cpu_s": on.worker_cpu_s},
                "p99_ratio": p99,
                "cpu_ratio": cpu,
                "lower_bound": bound,
                "text": (
                    f"signing cost signed/unsigned: p99 lateness {p99:.2f}x "
                    f"({on.p99_ms:.0f} vs {off.p99_ms:.0f} ms{', bounds' if bound else ''}), "
                    f"worker CPU {cpu:.2f}x ({on.worker_cpu_s:.1f} vs {off.worker_cpu_s:.1f} s); "
                    f"{on.signed_requests or 0:,} signed requests"
                ),
            }
        )
    return out


def targets(cells: list[Cell]) -> list[str]:
    by = {(c.workload, c.system): c for c in cells if c.variant is None}
    lines = []
    iso = by.get(("isolation", "timers"))
    if iso:
        ok = iso.p99_ms <= 100 and iso.never == 0 and "p99" not in iso.lower_bounds
        lines.append(
            f"target isolation/timers healthy p99 <= 100 ms, none never: "
            f"{'met' if ok else 'MISSED'} ({iso.p99_ms:.0f} ms, {iso.never} never)"
        )
    burst, eta = by.get(("burst", "timers")), by.get(("burst", "celery-eta"))
    if burst:
        ok = burst.p99_ms <= 2000 and burst.never == 0
        lines.append(
            f"target burst/timers p99 <= 2 s: {'met' if ok else 'MISSED'} ({burst.p99_ms:.0f} ms)"
        )
        if eta and eta.throughput > 0:
            ok = burst.throughput >= 2 * eta.throughput
            lines.append(
                f"target burst/timers throughput >= 2x celery-eta: {'met' if ok else 'MISSED'} "
                f"({burst.throughput / eta.throughput:.2f}x)"
            )
    tasks, plain = by.get(("celery-tasks", "timers")), by.get(("celery-tasks", "celery-eta"))
    if tasks:
        ok = tasks.twice == 0 and tasks.never == 0 and tasks.once == tasks.timers > 0
        lines.append(
            f"target celery-tasks/timers every task run exactly once: "
            f"{'met' if ok else 'MISSED'} ({tasks.twice} twice, {tasks.never} never)"
        )
        if plain and tasks.calls_per_s and plain.calls_per_s:
            share = tasks.calls_per_s / plain.calls_per_s
            lines.append(
                f"target celery-tasks durable_eta calls/s >= 50% of plain apply_async: "
                f"{'met' if share >= 0.5 else 'MISSED'} ({share:.0%})"
            )
    flaky = by.get(("flaky", "timers"))
    if flaky:
        ok = (
            flaky.as_expected == flaky.timers > 0
            and flaky.never == 0
            and flaky.p99_ms <= 100
            and "p99" not in flaky.lower_bounds
        )
        gt = ">" if "p99" in flaky.lower_bounds else ""
        lines.append(
            f"target flaky/timers every timer completed after exactly 2 attempts, 2nd attempt "
            f"p99 <= 100 ms: {'met' if ok else 'MISSED'} ({flaky.as_expected}/{flaky.timers}, "
            f"{gt}{flaky.p99_ms:.0f} ms)"
        )
    return lines


def table(cells: list[Cell], idle: dict[str, float], rates: dict[str, float]) -> str:
    labels = [c.workload + (f":{c.variant}" if c.variant else "") for c in cells]
    wide = max([13] + [len(label) + 2 for label in labels])  # retention:baseline
    header = (
        f"{'workload':<{wide}}{'system':<11}{'timers':>7}{'once':>7}{'twice':>6}{'never':>6}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'cb/s':>8}{'calls/s':>9}{'pg tx/min':>10}"
        f"{'sched cpu s':>12}{'sched MB':>9}{'wrk cpu s':>10}"
    )
    lines = [header, "-" * len(header)]

    def opt(v: float | None, fmt: str) -> str:
        return format(v, fmt) if v is not None else "-"

    for c, label in zip(cells, labels, strict=True):

        def ms(name: str, v: float, c: Cell = c) -> str:
            return (">" if name in c.lower_bounds else "") + format(v, ".0f")

        lines.append(
            f"{label:<{wide}}{c.system:<11}{c.timers:>7}{c.once:>7}{c.twice:>6}{c.never:>6}"
            f"{ms('p50', c.p50_ms):>9}{ms('p99', c.p99_ms):>9}{ms('max', c.max_ms):>9}"
            f"{c.throughput:>8.0f}{opt(c.calls_per_s, '.0f'):>9}"
            f"{opt(c.pg_statements_per_min, '.0f'):>10}{opt(c.scheduler_cpu_s, '.1f'):>12}"
            f"{opt(c.scheduler_peak_rss_mb, '.0f'):>9}{opt(c.worker_cpu_s, '.1f'):>10}"
        )
        for note in c.notes:
            lines.append(f"{'':<24}note: {note}")
    found = ratios(cells)
    if found:
        lines.append("")
        lines.extend(r["text"] for r in found)
    lines.extend(targets(cells))
    lines.append("")
    for system, per_min in idle.items():
        lines.append(
            f"idle minute, {system} scheduler: {per_min:.1f} PostgreSQL statements/min "
            "(counted by a proxy)"
        )
    for name, value in rates.items():
        lines.append(f"{name}: {value:,.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument(
        "--signing-seconds",
        type=float,
        default=45.0,
        help="the signing workload's steady duration, per run (default: %(default)s)",
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--systems",
        default="celery-eta,seed,timers",
        help="comma-separated systems to run (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        "--workloads",
        dest="only",
        default=",".join(ALL_WORKLOADS + EXTRAS),
        metavar="WORKLOAD[,WORKLOAD]",
        help="run only these, comma-separated, from: %(default)s (default: all), and "
        + ", ".join(OPT_IN)
        + " (only when named here)",
    )
    parser.add_argument("--page-rows", type=int, default=10_000_000)
    parser.add_argument(
        "--page-reps", type=int, default=100, help="pages timed from each depth (%(default)s)"
    )
    parser.add_argument(
        "--page-offset-reps", type=int, default=10, help="requests per offset (%(default)s)"
    )
    parser.add_argument(
        "--page-keep",
        action="store_true",
        help="keep the page workload's database, and reuse it when it holds --page-rows rows",
    )
    parser.add_argument("--retention-rows", type=int, default=5_000_000)
    parser.add_argument("--retention-min-seconds", type=float, default=60.0)
    parser.add_argument("--retention-max-seconds", type=float, default=1800.0)
    parser.add_argument(
        "--retention-rate",
        type=int,
        default=operate.RATE,
        help="retention: timers coming due per second (%(default)s)",
    )
    parser.add_argument(
        "--claim-size-rounds", type=int, default=200, help="claim-size: rounds per set"
    )
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "latest.json"))
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - {"celery-eta", "seed", "timers"}
    if unknown:
        parser.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    chosen = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = chosen - set(ALL_WORKLOADS + EXTRAS + OPT_IN)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix="timers-bench-"))
    services = find_services(workdir)
    bench = Bench(services, workdir, args.steady_seconds)
    cells: list[Cell] = []
    page: operate.PageReport | None = None
    retention: operate.RetentionReport | None = None
    claims: claim_size.ClaimSizeReport | None = None
    started = time.monotonic()
    try:
        for wl in workloads(args.steady_seconds, args.signing_seconds):
            if wl.name not in chosen:
                continue
            for system in systems:
                if wl.systems is not None and system not in wl.systems:
                    continue
                if wl.name == "celery-tasks":
                    print(f"running {wl.name} / {system} …", file=sys.stderr, flush=True)
                    cells.append(run_celery_tasks(bench, system, wl))
                    continue
                for variant, worker_env in wl.variants:
                    name = wl.name + (f":{variant}" if variant else "")
                    print(f"running {name} / {system} …", file=sys.stderr, flush=True)
                    cells.append(run_cell(bench, system, wl, variant, worker_env))
        idle: dict[str, float] = {}
        if "idle" in chosen and args.idle_seconds > 0:
            for system in systems:
                if system != "celery-eta":
                    print(f"idle minute / {system} …", file=sys.stderr, flush=True)
                    idle[system] = idle_statements(bench, system, args.idle_seconds)
        rates: dict[str, float] = {}
        if "rates" in chosen:
            print("creation rates …", file=sys.stderr, flush=True)
            rates = creation_rates(bench, 10.0)
        if "page" in chosen:
            print("page …", file=sys.stderr, flush=True)
            page = operate.run_page(
                bench, args.page_rows, args.page_reps, args.page_offset_reps, args.page_keep
            )
        if "retention" in chosen:
            print("retention …", file=sys.stderr, flush=True)
            retention = operate.run_retention(
                bench,
                args.retention_rows,
                args.retention_min_seconds,
                args.retention_max_seconds,
                args.retention_rate,
            )
            cells.extend(retention.cells)
        if "claim-size" in chosen:
            print("claim-size …", file=sys.stderr, flush=True)
            claims = claim_size.run_claim_size(bench, args.claim_size_rounds)
    finally:
        bench.stop_all()
        services.stop()
    if cells or idle or rates:
        print(table(cells, idle, rates))
    if retention is not None:
        print("\n" + operate.retention_lines(retention))
    if page is not None:
        print("\n" + operate.page_table(page))
    if claims is not None:
        print("\n" + claim_size.claim_size_lines(claims))
    print(f"\n(total {time.monotonic() - started:.0f}s; logs in {workdir})")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "cells": [asdict(c) for c in cells],
                "ratios": [{k: v for k, v in r.items() if k != "text"} for r in ratios(cells)],
                "targets": targets(cells),
                "idle": idle,
                "rates": rates,
                **({"page": asdict(page)} if page is not None else {}),
                **({"retention": asdict(retention)} if retention is not None else {}),
                **({"claim_size": asdict(claims)} if claims is not None else {}),
                "machine": {"cpus": os.cpu_count()},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
