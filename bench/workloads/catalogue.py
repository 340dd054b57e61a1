"""The workloads `make bench` runs, by name: the timed ones (`Workload`: timers due at planned
times, run by bench.workloads.timed, or by bench.workloads.celery_tasks), the extras run after them,
and the opt-in ones that run only when named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.workloads.signing import SIGNING_VARIABLE, signing_secret

ALL_WORKLOADS = (
    "burst",
    "isolation",
    "steady",
    "steady-2000",
    "short",
    "scale",
    "celery-tasks",
    "flaky",
    "signing",
)
EXTRAS = ("idle", "rates", "claim-path")
# Only when named in --only: page and retention fill millions of rows first; schedules runs for
# some 15 minutes (bench/workloads/schedules.py).
OPT_IN = ("page", "retention", "claim-size", "schedules", "scale-10m")
BURST = 10_000  # timers due within one second
STEADY_RATES = (500, 2000)  # timers coming due per second: steady, steady-2000
SCALE_PENDING = 1_000_000  # scale's background rows (scale-10m: 10,000,000)


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
    # Reuse the background rows of an earlier run (a template database, bench.workloads.scale).
    keep_background: bool = False
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


def workloads(
    steady_seconds: float,
    signing_seconds: float = 45.0,
    *,
    burst: int = BURST,
    scale_pending: int = SCALE_PENDING,
    scale_keep: bool = False,
) -> list[Workload]:
    rate, fast = STEADY_RATES
    return [
        Workload("burst", burst, 1.0),
        # celery-eta's prefork processes sit on the hanging receivers (30 s each), so its healthy
        # timers queue behind them: wait 120 s after the last due time, then count the rest never.
        Workload("isolation", 2000, 5.0, hanging=200, wait_after_due=120.0),
        Workload("steady", int(rate * steady_seconds), steady_seconds),
        # The seed's one UPDATE and one task per timer is far behind at 500/s already.
        Workload(
            "steady-2000",
            int(fast * steady_seconds),
            steady_seconds,
            systems=("celery-eta", "timers"),
        ),
        Workload("short", 200, 10.0, live=True),
        Workload(
            "scale",
            int(rate * steady_seconds),
            steady_seconds,
            background_rows=scale_pending,
            keep_background=scale_keep,
            systems=("timers",),  # the large table is about our scheduler's loader
        ),
        Workload(
            "scale-10m",
            int(rate * steady_seconds),
            steady_seconds,
            background_rows=10_000_000,
            keep_background=scale_keep,
            systems=("timers",),
        ),
        # 2,000 delayed calls of a user's task, each due 30 s after it is made (bench.workloads.celery_tasks).
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
