"""mca-timer's clients, unchanged, against the real API (`timers api`), scheduler and worker: the
requests of its client script `test_callbacks.sh` and the fields it reads, with a real HTTP
receiver and a real NATS subscriber; `/healthz` up; the README's curls. Its error shapes, its body
in `PUT` and batches and `/healthz` degraded are in tests/unit/test_mca_timer_api.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.mca_timer import Stack, running
from tests.support.nats import Subscriber
from tests.support.receiver import Receiver, wait_until
from tests.support.services import API_KEY, Services

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
