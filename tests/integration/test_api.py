"""The REST API on PostgreSQL: one timer made, read, listed and canceled through the routes, on the
store the `timers api` command builds. Everything else the routes do is tested on the in-memory
store (tests/unit/test_api*.py); what only PostgreSQL gives (statement timeouts, index plans,
totals' estimates, racing requests) is tested here, beside this file."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings
from timers.store import TimerStore


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    # No store given: the app makes its own PostgreSQL store, as `timers api` does.
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as c:
        yield c


def test_a_timer_is_made_read_listed_and_canceled_on_postgresql(
    client: TestClient, store: TimerStore
) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    made = client.post(
        "/timers",
        json={
            "execute_at": at.isoformat(),
            "callback_type": "http",
            "callback_config": {"url": "https://receiver.example/hook", "payload": {"order": 42}},
            "metadata": {"tenant": "acme"},
        },
    )
    assert made.status_code == 201, made.text
    timer_id = uuid.UUID(made.json()["data"]["id"])
    assert store.get(timer_id).callback_config["payload"] == {"order": 42}

    got = client.get(f"/timers/{timer_id}").json()["data"]
    assert got["status"] == "pending" and datetime.fromisoformat(got["execute_at"]) == at
    assert got["metadata"] == {"tenant": "acme"}

    listed = client.get("/timers", params={"metadata": '{"tenant": "acme"}'}).json()["data"]
    assert [t["id"] for t in listed["timers"]] == [str(timer_id)]
    assert listed["total"] == 1 and listed["total_exact"] is True  # counted, not estimated

    canceled = client.delete(f"/timers/{timer_id}")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["data"] == {"id": str(timer_id), "status": "canceled"}
    assert store.get(timer_id).status.value == "canceled"
    assert client.delete(f"/timers/{timer_id}").status_code == 400
