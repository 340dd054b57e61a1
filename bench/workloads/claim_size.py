"""claim-size (`python -m bench --only claim-size`): does the scheduler's claim cost grow with the
size of the timers it claims?

A fresh database (bench_claim_size) holds three sets of 50 due `http` timers: small (a payload of
a few bytes), big integers (a payload of 10,200 five-digit integers: 60 KiB of compact JSON, the
JSON decoder's worst case) and big text (one 60 KiB string). Each round puts one set back to
`pending` (untimed, one UPDATE) and times `TimerStore.claim_due` of its 50 ids, on an engine made
as the scheduler makes its own (`pool_pre_ping=False`): the statement, its rows and their
decoding, as the execution loop pays them. The sets take turns, `--claim-size-rounds` (200) rounds
each after 10 warm-up rounds each, with a `VACUUM` (untimed) every 20 rounds. Printed: p50 and p99
of each set, and the ratios of each big set to the small one (target: at most 2x at p50 and p99).
Timings include a loopback round trip to PostgreSQL; the database is dropped at the end.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from bench.cell import nearest_rank as percentile
from bench.harness import Bench, drop_database, say
from timers.storage import NewTimer
from timers.store import TimerStore, database_engine

DATABASE = "bench_claim_size"
COUNT = 50
WARMUP = 10
VACUUM_EVERY = 20
HOOK = "http://127.0.0.1:9/hook"
PAYLOADS: dict[str, Any] = {
    "small": {"order": 42},
    "big integers": {"items": [10_000 + i for i in range(10_200)]},
    "big text": {"note": "x" * (60 * 1024)},
}
_REPENDING = text(
    "UPDATE timers SET status = 'pending', claimed_at = NULL, attempts = 0 WHERE id = ANY(:ids)"
)


@dataclass
class ClaimSet:
    name: str
    timer_bytes: int  # the callback config as compact JSON
    times_ms: list[float] = field(default_factory=list)
    claimed: int = 0  # timers the last round claimed

    @property
    def p50(self) -> float:
        return percentile(self.times_ms, 0.5)

    @property
    def p99(self) -> float:
        return percentile(self.times_ms, 0.99)


@dataclass
class ClaimSizeReport:
    rounds: int
    sets: list[ClaimSet]


def _config(payload: Any) -> dict[str, Any]:
    return {"type": "http", "url": HOOK, "headers": {}, "payload": payload}


def run_claim_size(bench: Bench, rounds: int) -> ClaimSizeReport:
    url = bench.database(DATABASE)
    engine = database_engine(url, pool_pre_ping=False)
    store = TimerStore(engine)
    try:
        due = datetime.now(UTC) - timedelta(seconds=1)
        sets: list[tuple[ClaimSet, list[uuid.UUID]]] = []
        for name, payload in PAYLOADS.items():
            config = _config(payload)
            size = len(json.dumps(config, separators=(",", ":")).encode())
            made = store.create_many([NewTimer(due, "http", config) for _ in range(COUNT)])
            sets.append((ClaimSet(name, size), [t.id for t in made]))
        with engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE timers"))
        say(f"claim-size: {rounds} rounds of each of {len(sets)} sets of {COUNT} due timers …")
        for n in range(WARMUP + rounds):
            if n % VACUUM_EVERY == 0:
                with engine.connect() as conn:
                    conn.execute(text("VACUUM timers"))
            for claim_set, ids in sets:
                with engine.connect() as conn:
                    conn.execute(_REPENDING, {"ids": ids})
                began = time.perf_counter()
                claimed = store.claim_due(ids)
                took = (time.perf_counter() - began) * 1000
                claim_set.claimed = len(claimed)
                if n >= WARMUP:
                    claim_set.times_ms.append(took)
        return ClaimSizeReport(rounds, [claim_set for claim_set, _ in sets])
    finally:
        engine.dispose()
        drop_database(bench, DATABASE)


def claim_size_lines(report: ClaimSizeReport) -> str:
    lines = [
        f"claim-size: TimerStore.claim_due of {COUNT} due timers, {report.rounds} rounds per set",
        f"{'set':<14} {'config bytes':>12} {'p50 ms':>8} {'p99 ms':>8} {'claimed':>8}",
    ]
    for s in report.sets:
        lines.append(
            f"{s.name:<14} {s.timer_bytes:>12,} {s.p50:>8.2f} {s.p99:>8.2f} {s.claimed:>8}"
        )
    small = report.sets[0]
    for s in report.sets[1:]:
        p50, p99 = s.p50 / small.p50, s.p99 / small.p99
        verdict = "met" if max(p50, p99) <= 2 else "MISSED"
        lines.append(f"{s.name} / small: p50 {p50:.2f}x, p99 {p99:.2f}x (target <= 2x: {verdict})")
    return "\n".join(lines)
