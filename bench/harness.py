"""The harness: the systems under test started as shipped (worker, scheduler, API), the receivers,
the databases, and what is read back from them (statements counted, CPU, logs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil
import requests
from sqlalchemy import text

from bench.cell import Cell
from tests.support.services import Services
from timers.embedded import free_port
from timers.migrations import upgrade
from timers.store import TimerStore, database_engine

API_KEY = "bench-api-key-0123456789abcdefghijklmn"  # keys are at least 32 characters
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Every worker as shipped: no --pool or --concurrency, so celeryconfig.py decides (prefork, one
# process per CPU). Only logging and the cluster chatter between workers are set here.
WORKER_ARGS = ["--loglevel=INFO", "--without-gossip", "--without-mingle"]


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

    def env(self, database_url: str) -> dict[str, str]:
        """The environment of every process of the stack under test."""
        return {
            "DATABASE_URL": database_url,
            "REDIS_URL": self.broker,
            "LOG_LEVEL": "WARNING",
            # The receivers are on loopback, which outbound callbacks may not reach by default.
            "TIMERS_ALLOWED_NETWORKS": "127.0.0.0/8",
        }

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

    def start_scheduler(
        self, env: Mapping[str, str | None], tag: str, system: str = "timers"
    ) -> subprocess.Popen[bytes]:
        """The shipped scheduler, or (system `seed`) the same one as the seed designed it: no
        notifications or wake-ups, one UPDATE and one task per timer (bench/seed_scheduler.py)."""
        module = "bench.seed_scheduler" if system == "seed" else "timers.scheduler"
        proc = self.spawn(
            [sys.executable, "-m", module],
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


def start_api(bench: Bench, url: str, tag: str, workers: int = 1) -> str:
    """`timers api` (`workers` processes) on a free loopback port over the database at `url`, as
    shipped but logging only warnings; returns its base URL once it answers /health."""
    port = free_port()
    bench.spawn(
        [str(BIN / "timers"), "api", "--host", "127.0.0.1", "--port", str(port)]
        + ["--workers", str(workers)],
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


def database_exists(bench: Bench, name: str) -> bool:
    engine = database_engine(bench.services.postgres_url)
    try:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).first()
            )
    finally:
        engine.dispose()


def drop_database(bench: Bench, name: str) -> None:
    bench.services.admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def copy_database(bench: Bench, template: str, name: str) -> tuple[str, float]:
    """A copy of `template` (file by file: it is not written to the WAL)."""
    began = time.monotonic()
    drop_database(bench, name)
    bench.services.admin_execute(
        f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY'
    )
    return bench.services.database_url(name), time.monotonic() - began


class LogTail:
    """The lines a process appends to its log, read from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        complete, _, self.partial = data.rpartition(b"\n")
        return complete.decode(errors="replace").splitlines() if complete else []


def log_time(line: str) -> float | None:
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
    except ValueError:
        return None
