"""flaky: every timer's first attempt gets a 503, its second a 200. The database check and the
second attempt's lateness (the run itself is bench.workloads.timed's)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from bench.cell import Cell, percentile, summarize
from timers.store import TimerStore


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
