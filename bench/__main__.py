"""`make bench` (python -m bench): the same workloads through three systems, on this machine, in one
run, against the same receiver on 127.0.0.1 and the same Celery worker settings.

Systems:
  celery-eta  plain `apply_async(eta=…)` of a task making the same HTTP POST (no PostgreSQL)
  seed        our scheduler as the seed designed it: 30 s loads, 1 s ticks, one UPDATE per
              timer, no notifications or wake-ups (TIMERS_LISTEN=off, TIMERS_CLAIM_BATCH=1)
  timers      our scheduler with its defaults

Workloads: burst (5,000 due in the same second), steady (500/s coming due for 60 s), short (200
timers each created 2 s before due, while running), scale (steady with 1,000,000 pending rows
over the next 30 days; timers only). Prints one table and writes the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import redis
import requests
from sqlalchemy import text

from tests.support.services import Services, find_services
from timers.embedded import free_port
from timers.migrations import upgrade
from timers.models import uuid7
from timers.schema import timers as timers_table
from timers.store import NewTimer, TimerStore, database_engine

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The same worker settings for every system: a thread pool suits I/O-bound callbacks.
WORKER_ARGS = [
    "--pool=threads",
    "--concurrency=16",
    "--loglevel=INFO",
    "--without-gossip",
    "--without-mingle",
]


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


@dataclass
class Cell:
    system: str
    workload: str
    timers: int = 0
    once: int = 0
    twice: int = 0
    never: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    throughput: float = 0.0
    pg_statements_per_min: float | None = None
    scheduler_cpu_s: float | None = None
    scheduler_peak_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, services: Services, workdir: Path, steady_seconds: float) -> None:
        self.services = services
        self.workdir = workdir
        self.broker = services.redis_database(14)
        self.steady_seconds = steady_seconds
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- plumbing ----------------------------------------------------------------------------

    def database(self, name: str) -> str:
        from tests.conftest import admin_execute

        admin_execute(self.services, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_execute(self.services, f'CREATE DATABASE "{name}"')
        url = self.services.database_url(name)
        upgrade(url)
        return url

    def spawn(self, argv: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
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

    def receiver(self, tag: str) -> Receiver:
        port = free_port()
        out = self.workdir / f"arrivals-{tag}.json"
        proc = self.spawn(
            [sys.executable, "-m", "bench.receiver", str(port), str(out)], {}, f"receiver-{tag}"
        )
        self.wait_log(f"receiver-{tag}", "ready")
        return Receiver(f"http://127.0.0.1:{port}/bench", proc, out)

    def env(self, database_url: str, system: str) -> dict[str, str]:
        env = {"DATABASE_URL": database_url, "REDIS_URL": self.broker, "LOG_LEVEL": "WARNING"}
        if system == "seed":
            env.update(
                {
                    "TIMERS_LISTEN": "off",
                    "TIMERS_CLAIM_BATCH": "1",
                    "TIMERS_CALLBACKS_PER_TASK": "1",
                }
            )
        return env

    def start_worker(self, system: str, env: dict[str, str], tag: str) -> None:
        app = "bench.eta_app" if system == "celery-eta" else "timers.celery_app"
        self.spawn(
            [str(BIN / "celery"), "-A", app, "worker", *WORKER_ARGS, "-n", f"{tag}@%h"],
            env,
            f"worker-{tag}",
        )
        self.wait_log(f"worker-{tag}", " ready.", 60)

    def start_scheduler(self, env: dict[str, str], tag: str) -> subprocess.Popen[bytes]:
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


def summarize(cell: Cell, due: dict[str, float], arrivals: dict[str, list[float]]) -> Cell:
    late = []
    firsts = []
    for timer_id, at in due.items():
        got = sorted(arrivals.get(timer_id, []))
        if not got:
            cell.never += 1
            continue
        if len(got) == 1:
            cell.once += 1
        else:
            cell.twice += 1
        late.append((got[0] - at) * 1000)
        firsts.append(got[0])
    cell.timers = len(due)
    if late:
        late.sort()
        cell.p50_ms = statistics.median(late)
        cell.p99_ms = late[min(len(late) - 1, int(len(late) * 0.99))]
        cell.max_ms = late[-1]
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


def workloads(steady_seconds: float) -> list[Workload]:
    rate = 500
    return [
        Workload("burst", 5000, 1.0),
        Workload("steady", int(rate * steady_seconds), steady_seconds),
        Workload("short", 200, 10.0, live=True),
        Workload("scale", int(rate * steady_seconds), steady_seconds, background_rows=1_000_000),
    ]


def insert_timers(store: TimerStore, dues: list[tuple[uuid.UUID, datetime]], url: str) -> None:
    rows = [
        {
            "id": tid,
            "execute_at": at,
            "callback_type": "http",
            "status": "pending",
            "callback_config": {"type": "http", "url": url, "payload": {"bench": True}},
        }
        for tid, at in dues
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


def run_cell(bench: Bench, system: str, wl: Workload) -> Cell:
    tag = f"{system}-{wl.name}"
    cell = Cell(system, wl.name)
    receiver = bench.receiver(tag)
    redis.Redis.from_url(bench.broker).flushdb()
    db_name = f"bench_{system.replace('-', '_')}_{wl.name}"
    url = bench.database(db_name)
    store = TimerStore(database_engine(url))
    env = bench.env(url, system)
    due: dict[str, float] = {}
    scheduler = None
    try:
        if wl.background_rows:
            started = time.monotonic()
            fill_background(store, wl.background_rows)
            cell.notes.append(
                f"{wl.background_rows:,} background rows inserted in "
                f"{time.monotonic() - started:.0f}s"
            )
        bench.start_worker(system, env, tag)
        eta_app = None
        if system == "celery-eta":
            from bench.eta_app import create_app

            eta_app = create_app(bench.broker)
        lead = 4.0 + wl.count / 1500
        t0 = datetime.now(UTC) + timedelta(seconds=lead)
        plan = [
            (uuid7(), t0 + timedelta(seconds=wl.spread * i / wl.count)) for i in range(wl.count)
        ]
        config = {"type": "http", "url": receiver.url, "payload": {"bench": True}}
        if not wl.live:
            if eta_app is not None:
                with eta_app.producer_or_acquire() as producer:
                    for tid, at in plan:
                        eta_app.send_task(
                            "bench.post", args=[str(tid), config], eta=at, producer=producer
                        )
            else:
                insert_timers(store, plan, receiver.url)
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
            due = {str(tid): at.timestamp() for tid, at in plan}
        if system != "celery-eta":
            scheduler = bench.start_scheduler(env, tag)
        before = xacts(store, db_name)
        measure_start = time.monotonic()
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
        grace = 45.0 if system == "seed" else 20.0
        deadline = time.monotonic() + max(0.0, last_due - time.time()) + grace
        while time.monotonic() < deadline and receiver.count() < len(due):
            time.sleep(0.25)
        elapsed_min = (time.monotonic() - measure_start) / 60
        if system != "celery-eta":
            cell.pg_statements_per_min = (xacts(store, db_name) - before) / elapsed_min
        if scheduler is not None:
            process = psutil.Process(scheduler.pid)
            cpu = process.cpu_times()
            cell.scheduler_cpu_s = cpu.user + cpu.system
            hwm = [
                line
                for line in Path(f"/proc/{scheduler.pid}/status").read_text().splitlines()
                if line.startswith("VmHWM")
            ]
            cell.scheduler_peak_rss_mb = int(hwm[0].split()[1]) / 1024 if hwm else None
        time.sleep(1.0)
    finally:
        arrivals = receiver.collect()
        bench.stop_all()
        store.engine.dispose()
        if eta_app is not None:
            eta_app.close()
    return summarize(cell, due, arrivals)


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


def creation_rates(bench: Bench, seconds: float) -> dict[str, float]:
    """Timers created per second through the real API: single POSTs and 1,000-timer batches."""
    url = bench.database("bench_api")
    port = free_port()
    bench.spawn(
        [str(BIN / "timers"), "api", "--host", "127.0.0.1", "--port", str(port)],
        {"DATABASE_URL": url, "API_KEY": "bench", "LOG_LEVEL": "WARNING"},
        "api",
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    body = {
        "execute_at": "2099-01-01T00:00:00Z",
        "callback_type": "http",
        "callback_config": {"type": "http", "url": "http://127.0.0.1:9/", "payload": {"n": 1}},
    }

    def hammer(path: str, payload: dict[str, Any], per_request: int, threads: int) -> float:
        created = [0] * threads
        stop_at = time.monotonic() + seconds

        def client(i: int) -> None:
            session = requests.Session()
            session.headers["X-API-Key"] = "bench"
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


def table(cells: list[Cell], idle: dict[str, tuple[float, float]], rates: dict[str, float]) -> str:
    header = (
        f"{'workload':<8} {'system':<11}{'timers':>7}{'once':>7}{'twice':>6}{'never':>6}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'cb/s':>8}{'pg tx/min':>10}"
        f"{'sched cpu s':>12}{'sched MB':>9}"
    )
    lines = [header, "-" * len(header)]
    for c in cells:

        def opt(v: float | None, fmt: str) -> str:
            return format(v, fmt) if v is not None else "-"

        lines.append(
            f"{c.workload:<8} {c.system:<11}{c.timers:>7}{c.once:>7}{c.twice:>6}{c.never:>6}"
            f"{c.p50_ms:>9.0f}{c.p99_ms:>9.0f}{c.max_ms:>9.0f}{c.throughput:>8.0f}"
            f"{opt(c.pg_statements_per_min, '.0f'):>10}{opt(c.scheduler_cpu_s, '.1f'):>12}"
            f"{opt(c.scheduler_peak_rss_mb, '.0f'):>9}"
        )
        for note in c.notes:
            lines.append(f"{'':<20}note: {note}")
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
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--systems", default="celery-eta,seed,timers")
    parser.add_argument("--workloads", default="burst,steady,short,scale")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "latest.json"))
    args = parser.parse_args(argv)
    systems = args.systems.split(",")
    chosen = set(args.workloads.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="timers-bench-"))
    services = find_services(workdir)
    bench = Bench(services, workdir, args.steady_seconds)
    cells: list[Cell] = []
    started = time.monotonic()
    try:
        for wl in workloads(args.steady_seconds):
            if wl.name not in chosen:
                continue
            for system in systems:
                if wl.name == "scale" and system != "timers":
                    continue  # the 1,000,000-row table is about our scheduler's loader
                print(f"running {wl.name} / {system} …", file=sys.stderr, flush=True)
                cells.append(run_cell(bench, system, wl))
        idle: dict[str, float] = {}
        for system in systems:
            if system != "celery-eta" and args.idle_seconds > 0:
                print(f"idle minute / {system} …", file=sys.stderr, flush=True)
                idle[system] = idle_statements(bench, system, args.idle_seconds)
        print("creation rates …", file=sys.stderr, flush=True)
        rates = creation_rates(bench, 10.0)
    finally:
        bench.stop_all()
        services.stop()
    print(table(cells, idle, rates))
    print(f"\n(total {time.monotonic() - started:.0f}s; logs in {workdir})")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "cells": [asdict(c) for c in cells],
                "idle": idle,
                "rates": rates,
                "machine": {"cpus": os.cpu_count()},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
