"""rates: timers created per second through the real API, single POSTs and 1,000-timer batches."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from bench.harness import API_KEY, Bench, start_api


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
