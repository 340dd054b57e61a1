"""Idempotent create against PostgreSQL, over HTTP against the real `timers api` command: racing
requests with one key make one timer, and racing batches with overlapping keys make each timer once
(never deadlocking). The rest of idempotency is in tests/unit/test_api_idempotency.py."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import text

from tests.support import processes
from tests.support.services import API_KEY
from tests.unit.test_api_idempotency import timer_body
from timers.store import TimerStore


def rows(store: TimerStore) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        query = text("SELECT id, idempotency_key, api_key_hash, request_hash FROM timers")
        return [dict(r) for r in conn.execute(query).mappings()]


# -- racing duplicates, over HTTP against the real command -------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def api_server(database_url: str, store: TimerStore) -> Iterator[str]:
    port = free_port()
    env = {"DATABASE_URL": database_url, "API_KEY": API_KEY, "LOG_LEVEL": "WARNING"}
    proc = processes.Process(
        "api",
        [str(processes.BIN / "timers"), "api", "--host", "127.0.0.1", "--port", str(port)],
        env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while datetime.now(UTC) < deadline:
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.popen.poll() is None, proc.output()
        yield url
    finally:
        proc.stop()


def race(count: int, send: Any) -> list[requests.Response]:
    start = threading.Barrier(count)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def run() -> None:
        with requests.Session() as session:
            start.wait()
            response = send(session)
            with lock:
                answers.append(response)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_20_racing_requests_with_one_key_make_one_timer(api_server: str, store: TimerStore) -> None:
    headers = {"X-API-Key": API_KEY, "Idempotency-Key": "race-1"}
    answers = race(
        20, lambda s: s.post(f"{api_server}/timers", json=timer_body(), headers=headers, timeout=30)
    )
    assert len(answers) == 20
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 19 + [201], [a.text for a in answers]
    assert len({a.json()["data"]["id"] for a in answers}) == 1
    assert len(rows(store)) == 1


def test_racing_batches_with_overlapping_keys_make_each_timer_once(
    api_server: str, store: TimerStore
) -> None:
    # Each batch lists the same keys in another order: inserted in key order, they never deadlock.
    keys = [f"k{i}" for i in range(10)]

    def send(session: requests.Session) -> requests.Response:
        order = keys[threading.get_ident() % 10 :] + keys[: threading.get_ident() % 10]
        body = {"timers": [timer_body(key=k, metadata={"k": k}) for k in order]}
        headers = {"X-API-Key": API_KEY}
        return session.post(f"{api_server}/timers/batch", json=body, headers=headers, timeout=30)

    answers = race(10, send)
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    by_key: dict[str, set[str]] = {}
    for answer in answers:
        for timer in answer.json()["data"]["timers"]:
            key = store.get(timer["id"]).metadata["k"]  # type: ignore[index]
            by_key.setdefault(key, set()).add(timer["id"])
    assert all(len(made) == 1 for made in by_key.values()) and len(by_key) == 10
    assert len(rows(store)) == 10
