"""`make bench` (python -m bench): the same workloads through three systems, on this machine, in one
run, against the same receiver on 127.0.0.1. Every worker runs as shipped: `celery -A <app>
worker` with no pool or concurrency flags, so celeryconfig.py decides (prefork, one process per CPU).

Systems:
  celery-eta  plain `apply_async(eta=…)` of a task doing a synchronous `requests.post` to the same
              URL with the same headers (bench/eta_app.py; no PostgreSQL)
  seed        our scheduler as the seed designed it (bench/seed_scheduler.py): 30 s loads, 1 s ticks,
              one UPDATE and one task per timer, no notifications or wake-ups
  timers      our scheduler with its defaults

Workloads: burst (10,000 due in the same second, `--burst-count`), isolation (2,000 timers to the
healthy receiver and 200 to 200 receivers that never answer, interleaved, all due within 5 s;
measured on the healthy 2,000 only), steady (500/s coming due for 60 s), steady-2000 (2,000/s for
the same time; celery-eta and timers only), short (200 timers each created 2 s before due, while
running), scale (steady with 1,000,000 pending rows over the next 30 days, `--scale-pending`;
timers only; see bench/workloads/scale.py), celery-tasks (2,000 delayed calls of a user's own
Celery task, below; celery-eta and timers only), flaky and signing (below; timers only); then idle
(PostgreSQL statements of an idle scheduler for a minute), rates (timer creation through the API)
and claim-path (50,000 timers due at once and no worker: the scheduler's claims and enqueues per
second of its CPU, see bench/workloads/claim_path.py). Prints one table, with the ratios against
celery-eta and the targets, and writes the raw numbers as JSON. `--only isolation,burst` runs just
those. More run only when named in `--only`: page (keyset pages of `GET /timers` over 10,000,000
rows) and retention (steady load while the scheduler deletes 5,000,000 finished rows, against the
same load without), see bench/workloads/page.py and retention.py; claim-size (the scheduler's claim
of 50 timers of 60 KiB against 50 small ones), see bench/workloads/claim_size.py; schedules (10,000
schedules every minute, at :00 and jittered, against plain `celery beat` with the same entries; and
100,000 stored schedules: creation rate, the load statement, the scheduler's RSS), see
bench/workloads/schedules.py; scale-10m (scale over 10,000,000 pending rows; `--scale-keep` keeps
them for the next run; `--only steady,scale-10m --systems timers` gives the empty-table row its
p99 is held to).

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
import sys
import tempfile
import time
from pathlib import Path

from bench.cell import Cell
from bench.harness import ROOT, Bench
from bench.report import table, write_json
from bench.workloads.catalogue import (
    ALL_WORKLOADS,
    BURST,
    EXTRAS,
    OPT_IN,
    SCALE_PENDING,
    workloads,
)
from bench.workloads.celery_tasks import run_celery_tasks
from bench.workloads.claim_path import ClaimPathReport, claim_path_lines, run_claim_path
from bench.workloads.claim_size import ClaimSizeReport, claim_size_lines, run_claim_size
from bench.workloads.herd import HERDS
from bench.workloads.idle import idle_statements
from bench.workloads.page import run_page
from bench.workloads.page_report import PageReport, page_table
from bench.workloads.rates import creation_rates
from bench.workloads.retention import RATE, RetentionReport, retention_lines, run_retention
from bench.workloads.schedules import SchedulesReport, run_schedules, schedules_lines
from bench.workloads.timed import run_cell
from tests.support.services import find_services


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument(
        "--burst-count",
        type=int,
        default=BURST,
        help="burst: timers due in one second (%(default)s)",
    )
    parser.add_argument(
        "--scale-pending",
        type=int,
        default=SCALE_PENDING,
        help="scale: pending rows due over the next 30 days beside the steady load (%(default)s)",
    )
    parser.add_argument(
        "--scale-keep",
        action="store_true",
        help="scale, scale-10m: keep the filled rows (a template database) and reuse them on the "
        "next run when it holds as many",
    )
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
        default=RATE,
        help="retention: timers coming due per second (%(default)s)",
    )
    parser.add_argument(
        "--claim-size-rounds", type=int, default=200, help="claim-size: rounds per set"
    )
    parser.add_argument(
        "--claim-path-timers",
        type=int,
        default=50_000,
        help="claim-path: timers due at once (%(default)s)",
    )
    parser.add_argument("--schedules-count", type=int, default=10_000)
    parser.add_argument("--schedules-minutes", type=int, default=3)
    parser.add_argument("--schedules-stored", type=int, default=100_000)
    parser.add_argument(
        "--schedules-herds",
        default=",".join(HERDS),
        help="schedules: which herd cells to run (default: %(default)s)",
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
    services = find_services(workdir, nats=False)
    bench = Bench(services, workdir, args.steady_seconds)
    cells: list[Cell] = []
    page: PageReport | None = None
    retention: RetentionReport | None = None
    claims: ClaimSizeReport | None = None
    claim_path: ClaimPathReport | None = None
    recurring: SchedulesReport | None = None
    started = time.monotonic()
    try:
        chosen_workloads = workloads(
            args.steady_seconds,
            args.signing_seconds,
            burst=args.burst_count,
            scale_pending=args.scale_pending,
            scale_keep=args.scale_keep,
        )
        for wl in chosen_workloads:
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
        if "claim-path" in chosen:
            claim_path = run_claim_path(bench, args.claim_path_timers)
        if "page" in chosen:
            print("page …", file=sys.stderr, flush=True)
            page = run_page(
                bench, args.page_rows, args.page_reps, args.page_offset_reps, args.page_keep
            )
        if "retention" in chosen:
            print("retention …", file=sys.stderr, flush=True)
            retention = run_retention(
                bench,
                args.retention_rows,
                args.retention_min_seconds,
                args.retention_max_seconds,
                args.retention_rate,
            )
            cells.extend(retention.cells)
        if "claim-size" in chosen:
            print("claim-size …", file=sys.stderr, flush=True)
            claims = run_claim_size(bench, args.claim_size_rounds)
        if "schedules" in chosen:
            recurring = run_schedules(
                bench,
                args.schedules_count,
                args.schedules_minutes,
                args.schedules_stored,
                tuple(h.strip() for h in args.schedules_herds.split(",") if h.strip()),
            )
            cells.extend(recurring.cells)
    finally:
        bench.stop_all()
        services.stop()
    if cells or idle or rates:
        print(table(cells, idle, rates))
    if claim_path is not None:
        print("\n" + claim_path_lines(claim_path))
    if retention is not None:
        print("\n" + retention_lines(retention))
    if page is not None:
        print("\n" + page_table(page))
    if claims is not None:
        print("\n" + claim_size_lines(claims))
    if recurring is not None:
        print("\n" + schedules_lines(recurring))
    print(f"\n(total {time.monotonic() - started:.0f}s; logs in {workdir})")
    write_json(Path(args.json), cells, idle, rates, page, retention, claims, claim_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
