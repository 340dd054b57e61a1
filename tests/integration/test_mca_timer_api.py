"""mca-timer's clients, unchanged, against the real API (`timers api`), scheduler and worker: the
requests of its client script `test_callbacks.sh` and the fields it reads, with a real HTTP
receiver and a real NATS subscriber; its error shapes with its codes and HTTP statuses; its body
in `PUT` and batches; `/healthz` up and degraded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.mca_timer import Stack, running
from tests.support.nats import Subscriber
from tests.support.receiver import Receiver, wait_until
from tests.support.services import API_KEY, Services
from timers.api import create_app
from timers.config import Settings
from timers.embedded import free_port
from timers.store import TimerStore, database_engine

TOPIC = f"mca.test.{uuid.uuid4().hex[:10]}"


def at(seconds: float) -> str:
    """A time as the script writes it: `date -u +%Y-%m-%dT%H:%M:%SZ`."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def subscriber(services: Services) -> Iterator[Subscriber]:
    with Subscriber(services.nats_url, f"{TOPIC}.>") as s:
        yield s


@pytest.fixture(scope="module")
def stack(services: Services, template_database: str) -> Iterator[Stack]:
    name = create_database(services, template_database)
    try:
        with running(services, services.database_url(name)) as started:
            yield started
    finally:
        drop_database(services, name)


def test_its_client_script_works_unchanged(
    stack: Stack, receiver: Receiver, subscriber: Subscriber
) -> None:
    health = requests.get(f"{stack.api}/healthz", timeout=10)  # no key, as the script does
    assert health.status_code == 200
    assert datetime.fromisoformat(health.json()["data"]["timestamp"]).tzinfo is not None
    first, second = at(2), at(3)
    http = stack.call(
        "POST",
        "/timers",
        json={
            "execute_at": first,
            "callback": {
                "type": "http",
                "url": receiver.url("/post"),
                "headers": {"X-Test-Header": "http-test"},
                "payload": {"event": "http_callback_test", "timestamp": first},
            },
        },
    )
    nats = stack.call(
        "POST",
        "/timers",
        json={
            "execute_at": second,
            "callback": {
                "type": "nats",
                "topic": f"{TOPIC}.execution",
                "key": "test-key-123",
                "payload": {"event": "nats_callback_test", "timestamp": second},
            },
        },
    )
    assert (http.status_code, nats.status_code) == (201, 201), (http.text, nats.text)
    made = http.json()["data"]
    # Every field of its TimerResponse.
    assert set(made) >= {"id", "created_at", "execute_at", "callback_type", "status", "executed_at"}
    assert (made["callback_type"], made["status"], made["executed_at"]) == ("http", "pending", None)
    http_id, nats_id = made["id"], nats.json()["data"]["id"]

    detail = stack.call("GET", f"/timers/{http_id}").json()["data"]
    assert (detail["id"], detail["status"]) == (http_id, "pending")
    assert detail["callback"]["type"] == "http" and detail["callback"]["url"] == receiver.url(
        "/post"
    )
    assert detail["callback"]["headers"] == {"X-Test-Header": "***"}  # values never shown
    detail = stack.call("GET", f"/timers/{nats_id}").json()["data"]
    assert detail["callback"]["type"] == "nats" and detail["callback"]["key"] == "test-key-123"
    assert detail["callback"]["topic"] == f"{TOPIC}.execution"

    listed = stack.call("GET", "/timers", params={"limit": 5}).json()["data"]
    assert listed["total"] == 2 and listed["total_exact"] is True
    assert {(t["id"], t["callback_type"], t["status"]) for t in listed["timers"]} == {
        (http_id, "http", "pending"),
        (nats_id, "nats", "pending"),
    }
    for kind in ("http", "nats"):
        only = stack.call("GET", "/timers", params={"callback_type": kind, "limit": 3})
        assert only.json()["data"]["total"] == 1

    stack.settled([http_id, nats_id])
    for timer_id in (http_id, nats_id):
        result = stack.call("GET", f"/timers/{timer_id}").json()["data"]
        assert result["status"] == "completed", result["last_error"]
        assert result["executed_at"] is not None
    [arrival] = receiver.for_timer(http_id)
    assert arrival.headers["X-Test-Header"] == "http-test"
    assert arrival.body == {"event": "http_callback_test", "timestamp": first}
    assert wait_until(
        lambda: any(m.subject.endswith("test-key-123") for m in subscriber.received()), 5
    )
    [message] = [m for m in subscriber.received() if m.headers.get("Nats-Msg-Id") == nats_id]
    assert message.subject == f"{TOPIC}.execution.test-key-123"
    assert json.loads(message.data) == {"event": "nats_callback_test", "timestamp": second}


HTTP = {"type": "http", "url": "https://example.com/hook"}
UNKNOWN = f"/timers/{uuid.uuid4()}"
ERRORS = [
    # (name, method, path, body, key) -> its HTTP status and code
    ("past execute_at", "POST", "/timers", {"execute_at": "2020-01-01T00:00:00Z"}, API_KEY, 400, 2),
    ("bad URL", "POST", "/timers", {"callback": {**HTTP, "url": "ftp://example.com/x"}}, API_KEY, 400, 2),
    ("no scheme", "POST", "/timers", {"callback": {**HTTP, "url": "example.com/x"}}, API_KEY, 400, 2),
    ("empty topic", "POST", "/timers", {"callback": {"type": "nats", "topic": ""}}, API_KEY, 400, 2),
    ("blank topic", "POST", "/timers", {"callback": {"type": "nats", "topic": "  "}}, API_KEY, 400, 2),
    ("no type", "POST", "/timers", {"callback": {"url": "https://example.com/x"}}, API_KEY, 400, 2),
    ("unknown type", "POST", "/timers", {"callback": {"type": "sms"}}, API_KEY, 400, 2),
    ("both forms", "POST", "/timers", {"callback_config": HTTP}, API_KEY, 400, 2),
    ("neither form", "POST", "/timers", {"callback": None}, API_KEY, 400, 2),
    ("unknown id", "GET", UNKNOWN, None, API_KEY, 404, 3),
    ("unknown id, update", "PUT", UNKNOWN, {"callback": HTTP}, API_KEY, 404, 3),
    ("unknown id, cancel", "DELETE", UNKNOWN, None, API_KEY, 404, 3),
    ("wrong key", "GET", "/timers", None, "not-the-key", 401, 4),
    ("no key", "GET", "/timers", None, "", 401, 4),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "key", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in ERRORS],
)
def test_its_error_shapes_get_its_codes_and_statuses(
    stack: Stack, method: str, path: str, body: Any, key: str, status: int, code: int
) -> None:
    if body is not None and method == "POST":
        body = {"execute_at": at(60), "callback": HTTP, **body}
    before = stack.call("GET", "/timers").json()["data"]["total"]
    response = stack.call(method, path, key=key, json=body)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert stack.call("GET", "/timers").json()["data"]["total"] == before  # nothing was made


def test_its_body_in_updates_and_batches(stack: Stack) -> None:
    made = stack.call(
        "POST",
        "/timers/batch",
        json={"timers": [{"execute_at": at(3600), "callback": {**HTTP, "payload": None}}]},
    )
    assert made.status_code == 201, made.text
    [summary] = made.json()["data"]["timers"]
    assert summary["callback_type"] == "http" and summary["executed_at"] is None
    path = f"/timers/{summary['id']}"
    moved = stack.call("PUT", path, json={"callback": {"type": "nats", "topic": TOPIC, "key": "k"}})
    assert moved.status_code == 200, moved.text
    shown = stack.call("GET", path).json()["data"]
    assert shown["callback_type"] == "nats"
    assert shown["callback"] == {**shown["callback_config"], "type": "nats"}
    assert (shown["callback"]["topic"], shown["callback"]["key"]) == (TOPIC, "k")
    both = stack.call("PUT", path, json={"callback": HTTP, "callback_config": HTTP})
    assert (both.status_code, both.json()["code"]) == (400, 2)
    canceled = stack.call("DELETE", path)
    assert canceled.json()["data"] == {"id": summary["id"], "status": "canceled"}


def test_healthz_is_degraded_without_the_database() -> None:
    gone = f"postgresql://postgres@127.0.0.1:{free_port()}/timers"
    engine = database_engine(gone)
    try:
        app = create_app(Settings(database_url=gone, api_key=API_KEY), store=TimerStore(engine))
        response = TestClient(app).get("/healthz")  # no lifespan: it would refuse to start
    finally:
        engine.dispose()
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == 1 and body["message"] == "database connection failed"
    assert body["data"]["status"] == "degraded" and body["data"]["database"] == "disconnected"
    assert body["data"]["timestamp"]


def test_the_documented_curls_of_its_format_work(stack: Stack) -> None:
    section = (processes.ROOT / "docs" / "mca-timer.md").read_text()
    script = "\n".join(re.findall(r"```sh\n(.*?)```", section, flags=re.S))
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        env={**os.environ, "API": stack.api, "API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answers, rest, decoder = [], result.stdout.strip(), json.JSONDecoder()
    while rest:  # curl prints each body without a newline after it
        answer, end = decoder.raw_decode(rest)
        answers.append(answer)
        rest = rest[end:].strip()
    assert [(a["code"], a["data"]["callback_type"]) for a in answers] == [(0, "nats"), (0, "http")]
