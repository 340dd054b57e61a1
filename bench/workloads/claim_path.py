"""claim-path: the scheduler's claim and enqueue alone, in timers per second of scheduler CPU.

A fresh database (bench_claim_path) holds `--claim-path-timers` (50,000) pending `http` timers, all
due at the same instant t0, a few seconds ahead; no worker runs. The scheduler starts as shipped
(`python -m timers.scheduler`, default settings, logging at INFO), loads them at its start (their
t0 is inside its lookahead) and, at t0, claims and enqueues them all: claims of up to
`CLAIM_BATCH` timers, messages of up to `CALLBACKS_PER_TASK`. The messages stay in the broker's
queue, where they are counted and decoded (every timer in exactly one message) once the scheduler
is stopped; the rows are counted `executing` in the database.

Measured: the scheduler process's CPU seconds (user + system, every thread, through psutil) from
just before t0 (after its load) until the queue holds every message, polled every 20 ms; and the
wall time from the tick's first line (`Executing N due timers`) to its last `Spawned callback`
line. Printed: timers per second of scheduler CPU (target: at least 10,000 per core) and per
second of wall time. PostgreSQL and Redis run on the same cores; their CPU is not counted here.
"""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psutil
import redis
from sqlalchemy import text

from bench.cell import Cell
from bench.harness import Bench, drop_database, say, scheduler_log, scheduler_usage
from timers.config import CALLBACKS_PER_TASK, CLAIM_BATCH
from timers.models import uuid7
from timers.store import TimerStore, database_engine

DATABASE = "bench_claim_path"
TAG = "claim-path"
QUEUE = "timers"  # timers/celeryconfig.py's task_default_queue
TARGET_PER_CPU_S = 10_000
# From the end of the fill to t0: the scheduler's start and its first load come before it.
LEAD = 15.0
_FILL = text(
    "INSERT INTO timers (id, execute_at, callback_type, callback_config, status) "
    "SELECT unnest(CAST(:ids AS uuid[])), :at, 'http', "
    '\'{"type": "http", "url": "http://127.0.0.1:9/claim-path", "payload": {"n": 1}}\', '
    "'pending'"
)


@dataclass
class ClaimPathReport:
    timers: int
    executing: int = 0  # rows `executing` in the database at the end
    messages: int = 0  # messages in the queue
    timers_in_messages: int = 0
    distinct_in_messages: int = 0
    cpu_s: float = 0.0  # scheduler CPU from just before t0 until every message was queued
    wall_s: float = 0.0  # first line of the tick to its last Spawned callback line
    queued_s: float = 0.0  # t0 until every message was queued (polled)
    scheduler_peak_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def per_cpu_s(self) -> float:
        return self.timers_in_messages / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def per_wall_s(self) -> float:
        return self.timers_in_messages / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def met(self) -> bool:
        complete = self.executing == self.distinct_in_messages == self.timers_in_messages
        return (
            complete
            and self.timers_in_messages == self.timers
            and (self.per_cpu_s >= TARGET_PER_CPU_S)
        )


def fill(store: TimerStore, count: int, at: datetime) -> None:
    """`count` pending timers due at `at`, in one statement (no change notifications)."""
    ids = [str(uuid7()) for _ in range(count)]
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE timers DISABLE TRIGGER timers_notify_change"))
        conn.execute(_FILL, {"ids": ids, "at": at})
        conn.execute(text("ALTER TABLE timers ENABLE TRIGGER timers_notify_change"))
    with store.engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE timers"))


def queued_timers(broker: redis.Redis) -> tuple[int, list[str]]:
    """The messages in the callback queue and the timer ids they carry (Celery's message
    protocol 2 over Redis: a JSON envelope with a base64 body `[args, kwargs, embed]`)."""
    raw = broker.lrange(QUEUE, 0, -1)
    ids: list[str] = []
    for message in raw:
        envelope = json.loads(message)
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        ids.extend(str(claim[0]) for claim in args[0])
    return len(raw), ids


def run_claim_path(bench: Bench, count: int) -> ClaimPathReport:
    report = ClaimPathReport(count)
    broker = redis.Redis.from_url(bench.broker)
    broker.flushdb()
    url = bench.database(DATABASE)
    store = TimerStore(database_engine(url))
    expected = _messages(count)
    try:
        say(f"claim-path: {count:,} timers due at once, no worker …")
        t0 = datetime.now(UTC) + timedelta(seconds=LEAD)
        fill(store, count, t0)
        scheduler = bench.start_scheduler(bench.env(url), TAG)
        bench.wait_log(f"scheduler-{TAG}", f"Loaded {count} timers", LEAD)
        before_t0 = t0.timestamp() - 0.5 - time.time()
        if before_t0 < 0:
            report.notes.append(f"the load ended {-before_t0:.1f}s after t0 - 0.5s: CPU inexact")
        time.sleep(max(0.0, before_t0))
        process = psutil.Process(scheduler.pid)
        cpu = process.cpu_times()
        cpu_before = cpu.user + cpu.system
        deadline = time.monotonic() + LEAD + 300
        while broker.llen(QUEUE) < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        cpu = process.cpu_times()
        report.cpu_s = cpu.user + cpu.system - cpu_before
        report.queued_s = time.time() - t0.timestamp()
        probe = Cell("timers", TAG)
        scheduler_usage(probe, scheduler)
        report.scheduler_peak_rss_mb = probe.scheduler_peak_rss_mb
        bench.stop_all()
        ticks = [
            at for at, _ in scheduler_log(bench, TAG, "due timers") if at >= t0.timestamp() - 1
        ]
        spawned = scheduler_log(bench, TAG, "Spawned callback for timer ")
        if ticks and spawned:
            report.wall_s = spawned[-1][0] - ticks[0]
        if len(ticks) > 1:
            report.notes.append(f"{len(ticks)} ticks took the due timers (one expected)")
        report.messages, ids = queued_timers(broker)
        report.timers_in_messages, report.distinct_in_messages = len(ids), len(set(ids))
        with store.engine.connect() as conn:
            report.executing = int(
                conn.execute(
                    text("SELECT count(*) FROM timers WHERE status = 'executing'")
                ).scalar_one()
            )
        return report
    finally:
        bench.stop_all()
        store.engine.dispose()
        broker.flushdb()
        drop_database(bench, DATABASE)


def _messages(count: int) -> int:
    """Messages the claims of `count` timers make: each claim of up to CLAIM_BATCH is sent in
    messages of up to CALLBACKS_PER_TASK."""
    full, rest = divmod(count, CLAIM_BATCH)
    return full * math.ceil(CLAIM_BATCH / CALLBACKS_PER_TASK) + math.ceil(rest / CALLBACKS_PER_TASK)


def claim_path_lines(report: ClaimPathReport) -> str:
    lines = [
        f"claim-path: {report.timers:,} timers due at once, no worker: the scheduler claimed and "
        f"enqueued {report.timers_in_messages:,} ({report.distinct_in_messages:,} distinct, "
        f"{report.messages:,} messages; {report.executing:,} rows executing) using "
        f"{report.cpu_s:.2f} s of CPU in {report.wall_s:.2f} s (all queued {report.queued_s:.2f} s "
        f"after t0); scheduler peak RSS {report.scheduler_peak_rss_mb or 0:.0f} MB",
        f"target claim-path >= {TARGET_PER_CPU_S:,} timers per second of scheduler CPU: "
        f"{'met' if report.met else 'MISSED'} ({report.per_cpu_s:,.0f}/CPU-s; "
        f"{report.per_wall_s:,.0f}/s wall)",
    ]
    lines.extend(f"  note: {note}" for note in report.notes)
    return "\n".join(lines)
