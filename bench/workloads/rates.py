"""rates: timers created per second through the real API, single POSTs and 1,000-timer batches,
beside the same client's rate against `GET /health` (the HTTP stack's ceiling on this machine).

The client is asyncio (aiohttp) with several connections open at once, in a process of its own
so that the bench's threads do not share its interpreter: it sends the same bytes every time
(the body is encoded once) and counts only 201s, so it is not what limits the rate.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bench.harness import API_KEY, Bench, start_api

# Concurrent connections per measurement: enough to keep every API worker busy while one
# request waits on PostgreSQL's commit.
SINGLE_CONNECTIONS = 16
BATCH_CONNECTIONS = 4
BATCH_SIZE = 1000
WARM_UP = 1.0  # seconds


async def _hammer(
    base: str,
    method: str,
    path: str,
    body: bytes | None,
    per_request: int,
    connections: int,
    seconds: float,
) -> tuple[float, int]:
    """Timers (or answers, for GET) per second over `seconds`, and the number of failed answers."""
    done = [0]
    failed = [0]
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    expected = 200 if method == "GET" else 201
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one_connection(until: float) -> None:
            while time.monotonic() < until:
                async with session.request(method, base + path, data=body, headers=headers) as r:
                    await r.read()
                    if r.status == expected:
                        done[0] += per_request
                    else:
                        failed[0] += 1

        async def every_connection(seconds: float) -> float:
            """Seconds it took, all connections sending until `seconds` have passed."""
            started = time.monotonic()
            until = started + seconds
            await asyncio.gather(*(one_connection(until) for _ in range(connections)))
            return time.monotonic() - started

        # A warm-up first, not counted: the API opens its pooled connections.
        await every_connection(WARM_UP)
        done[0] = failed[0] = 0
        took = await every_connection(seconds)
        return done[0] / took, failed[0]


def _measure(base: str, seconds: float, out: Any) -> None:
    """In a child process: every rate, sent back through `out` as a dict."""
    item = {
        "execute_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "callback_type": "http",
        "callback_config": {"type": "http", "url": "http://127.0.0.1:9/", "payload": {"n": 1}},
    }
    single = json.dumps(item).encode()
    batch = json.dumps({"timers": [item] * BATCH_SIZE}).encode()

    async def run() -> dict[str, float]:
        health, _ = await _hammer(base, "GET", "/health", None, 1, SINGLE_CONNECTIONS, seconds)
        one, failed_one = await _hammer(
            base, "POST", "/timers", single, 1, SINGLE_CONNECTIONS, seconds
        )
        many, failed_many = await _hammer(
            base, "POST", "/timers/batch", batch, BATCH_SIZE, BATCH_CONNECTIONS, seconds
        )
        return {
            "get_health_per_s": health,
            "post_timers_per_s": one,
            "post_batch_timers_per_s": many,
            "failed_answers": float(failed_one + failed_many),
        }

    out.send(asyncio.run(run()))


def creation_rates(bench: Bench, seconds: float) -> dict[str, float]:
    """Timers created per second through the real API (single POSTs, 1,000-timer batches) and
    the same client's `GET /health` rate in the same run, the ceiling of the HTTP stack."""
    workers = len(os.sched_getaffinity(0))  # one API process per CPU, as docs/scaling.md says
    base = start_api(bench, bench.database("bench_api"), "api", workers)
    try:
        receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
        child = multiprocessing.get_context("spawn").Process(
            target=_measure, args=(base, seconds, send)
        )
        child.start()
        rates: dict[str, float] = receive.recv()
        child.join()
    finally:
        bench.stop_all()
    # The report prints whole numbers: the single-create rate as a percentage of the ceiling.
    ceiling = max(rates["get_health_per_s"], 1e-9)
    rates["api_workers"] = float(workers)
    rates["post_timers_pct_of_health"] = 100 * rates["post_timers_per_s"] / ceiling
    return rates
