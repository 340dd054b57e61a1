"""mca-timer's clients against the API, on the in-memory store: its error shapes with its codes
and HTTP statuses, its body in `PUT` and batches, `/healthz` degraded. Its client script against
the real processes: tests/integration/test_mca_timer_api.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings
from timers.testing import InMemoryStore

TOPIC = f"mca.test.{uuid.uuid4().hex[:10]}"


def at(seconds: float) -> str:
    """A time as mca-timer's script writes it: `date -u +%Y-%m-%dT%H:%M:%SZ`."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    """The API as mca-timer's clients call it: any method and path, with a key of their choice."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def call(self, method: str, path: str, key: str = API_KEY, **kwargs: Any) -> Any:
        return self.client.request(method, path, headers={"X-API-Key": key}, **kwargs)


@pytest.fixture
def api(settings: Settings, store: InMemoryStore) -> Iterator[Api]:
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client)


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
    api: Api, method: str, path: str, body: Any, key: str, status: int, code: int
) -> None:
    if body is not None and method == "POST":
        body = {"execute_at": at(60), "callback": HTTP, **body}
    before = api.call("GET", "/timers").json()["data"]["total"]
    response = api.call(method, path, key=key, json=body)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert api.call("GET", "/timers").json()["data"]["total"] == before  # nothing was made


def test_its_body_in_updates_and_batches(api: Api) -> None:
    made = api.call(
        "POST",
        "/timers/batch",
        json={"timers": [{"execute_at": at(3600), "callback": {**HTTP, "payload": None}}]},
    )
    assert made.status_code == 201, made.text
    [summary] = made.json()["data"]["timers"]
    assert summary["callback_type"] == "http" and summary["executed_at"] is None
    path = f"/timers/{summary['id']}"
    moved = api.call("PUT", path, json={"callback": {"type": "nats", "topic": TOPIC, "key": "k"}})
    assert moved.status_code == 200, moved.text
    shown = api.call("GET", path).json()["data"]
    assert shown["callback_type"] == "nats"
    assert shown["callback"] == {**shown["callback_config"], "type": "nats"}
    assert (shown["callback"]["topic"], shown["callback"]["key"]) == (TOPIC, "k")
    both = api.call("PUT", path, json={"callback": HTTP, "callback_config": HTTP})
    assert (both.status_code, both.json()["code"]) == (400, 2)
    canceled = api.call("DELETE", path)
    assert canceled.json()["data"] == {"id": summary["id"], "status": "canceled"}


def test_healthz_is_degraded_without_the_database(store: InMemoryStore) -> None:
    store.unavailable = True  # as a database that can't be reached
    app = create_app(Settings(api_key=API_KEY), store=store)
    response = TestClient(app).get("/healthz")  # no lifespan: it would refuse to start
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == 1 and body["message"] == "database connection failed"
    assert body["data"]["status"] == "degraded" and body["data"]["database"] == "disconnected"
    assert body["data"]["timestamp"]
