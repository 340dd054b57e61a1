"""One row of the benchmark's table (`Cell`: a workload through a system) and the lateness
statistics that fill it."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


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
    # scale: pending rows beside the load, and the scheduler's load statement over them (ms).
    background_rows: int | None = None
    loader_ms: float | None = None
    notes: list[str] = field(default_factory=list)


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


def percentile(values: list[float], q: float) -> float:
    """The same rank rule as summarize (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def nearest_rank(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it (NaN for no
    values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
