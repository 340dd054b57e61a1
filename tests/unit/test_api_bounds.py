"""Every timer is bounded (64 KiB of callback config, metadata and retry policy as compact JSON; 32
metadata keys) wherever it comes in, and a page of big timers stops at a bounded size. On the
in-memory store; that the scheduler's claim reads none of it: tests/integration/test_timer_bounds.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient

from tests.support.services import API_KEY
from timers.api import create_app
from timers.celery import durable_eta
from timers.config import Settings
from timers.errors import InvalidTimer
from timers.library import Timers
from timers.storage import NewTimer, Store
from timers.testing import InMemoryStore

HOOK = "https://receiver.example/hook"
LIMIT = "65,536 bytes"  # the bound, as the error says it
PAGE_BYTES = 4 * 1024 * 1024  # where a page of GET /timers stops


@pytest.fixture
def client(settings: Settings, store: InMemoryStore) -> Iterator[TestClient]:
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as c:
        yield c


def body(payload: Any = None, **fields: Any) -> dict[str, Any]:
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    config = {"type": "http", "url": HOOK, "payload": payload}
    return {"execute_at": at, "callback_type": "http", "callback_config": config, **fields}


def refused(response: Any, message: str) -> str:
    assert response.status_code == 400, response.text[:300]
    assert response.json()["code"] == 2
    said: str = response.json()["message"]
    assert said.startswith(message), said
    return said


def rows(store: InMemoryStore) -> int:
    total = store.page(limit=1).total
    assert total is not None
    return total


def big_timers(store: Store, count: int, at: datetime, size: int = 60 * 1024) -> list[Any]:
    config = {"type": "http", "url": HOOK, "payload": {"blob": "x" * size}}
    return store.create_many([NewTimer(at, "http", config, {"n": i}) for i in range(count)])


# -- the bound, at every way in ------------------------------------------------------------------


def test_a_create_whose_timer_outgrows_its_small_body_is_refused(
    client: TestClient, store: InMemoryStore
) -> None:
    # `1e9` is 3 bytes in the request and 12 (`1000000000.0`) once stored: a 60 KB body whose
    # timer would be 195 KB.
    raw = json.dumps(body(payload="NUMBERS")).replace(
        '"NUMBERS"', f"[{','.join(['1e9'] * 15_000)}]"
    )
    assert len(raw) < 64 * 1024
    response = client.post("/timers", content=raw, headers={"Content-Type": "application/json"})
    said = refused(response, "timer: 195,")
    assert LIMIT in said
    assert rows(store) == 0


def test_a_batch_names_the_timer_over_64_kib_and_makes_none(
    client: TestClient, store: InMemoryStore
) -> None:
    items = [body({"i": i}) for i in range(5)]
    items[3] = body("x" * 70_000)
    said = refused(client.post("/timers/batch", json={"timers": items}), "timers[3]: 70,")
    assert LIMIT in said
    assert rows(store) == 0


def test_metadata_has_at_most_32_keys_at_every_way_in(
    client: TestClient, store: InMemoryStore
) -> None:
    many = {f"k{i}": i for i in range(33)}
    refused(client.post("/timers", json=body(metadata=many)), "metadata: 33 keys")
    items = [body(), body(metadata=many)]
    refused(client.post("/timers/batch", json={"timers": items}), "timers[1].metadata: 33 keys")
    made = client.post("/timers", json=body(metadata={f"k{i}": i for i in range(32)}))
    assert made.status_code == 201, made.text
    timer_id = made.json()["data"]["id"]
    refused(client.put(f"/timers/{timer_id}", json={"metadata": many}), "metadata: 33 keys")
    assert len(store.get(uuid.UUID(timer_id)).metadata or {}) == 32
    assert rows(store) == 1


def test_an_update_is_bounded_as_the_timer_it_would_make(
    client: TestClient, store: InMemoryStore
) -> None:
    made = client.post("/timers", json=body("x" * 40_000, metadata={"tenant": "acme"}))
    assert made.status_code == 201, made.text
    timer_id = made.json()["data"]["id"]
    # Each under 64 KiB, but the timer would hold both.
    said = refused(
        client.put(f"/timers/{timer_id}", json={"metadata": {"note": "y" * 30_000}}), "timer: 70,"
    )
    assert LIMIT in said
    assert store.get(uuid.UUID(timer_id)).metadata == {"tenant": "acme"}
    # Replacing the config too makes room.
    small = {"type": "http", "url": HOOK, "payload": 1}
    both = {"metadata": {"note": "y" * 30_000}, "callback_config": small}
    assert client.put(f"/timers/{timer_id}", json=both).status_code == 200
    assert store.get(uuid.UUID(timer_id)).metadata == {"note": "y" * 30_000}


def test_the_python_api_refuses_a_timer_over_64_kib(store: InMemoryStore) -> None:
    # The task's arguments alone are capped lower (32 KiB, the `celery` kind's own limit): the
    # metadata takes the timer past 64 KiB.
    allowed = Settings(task_broker_url="redis://127.0.0.1:6379/6", celery_tasks=("shop.*",))
    timers = Timers(store=store, settings=allowed)
    note = {"note": "y" * 40_000}
    with pytest.raises(InvalidTimer, match="timer: 70,") as too_big:
        timers.schedule("shop.expire_order", args=["x" * 30_000], countdown=60, metadata=note)
    assert LIMIT in str(too_big.value)
    with pytest.raises(InvalidTimer, match="metadata: 33 keys"):
        timers.schedule("shop.expire_order", countdown=60, metadata={f"k{i}": i for i in range(33)})
    # The Celery drop-in goes the same way, within the arguments' own cap.
    app = Celery("shop", set_as_current=False)

    @app.task(name="shop.expire_order")
    def expire(blob: str) -> None: ...

    durable_eta(app, threshold=1, timers=timers)
    with pytest.raises(InvalidTimer, match="at most 32 KiB"):
        expire.apply_async(("x" * 40_000,), countdown=60)
    assert rows(store) == 0
    expire.apply_async(("x" * 30_000,), countdown=60)
    assert rows(store) == 1


# -- a page is bounded in bytes ------------------------------------------------------------------


def test_a_page_of_big_timers_stops_at_4_mib_and_its_cursor_goes_on(
    client: TestClient, store: InMemoryStore
) -> None:
    made = big_timers(store, 80, datetime.now(UTC) + timedelta(hours=1))
    first = client.get("/timers", params={"limit": 200, "sort": "created_at", "order": "asc"})
    assert first.status_code == 200
    page = first.json()["data"]
    assert 60 <= len(page["timers"]) < 80
    assert len(first.content) < PAGE_BYTES + 70 * 1024
    assert page["next_cursor"] is not None
    seen = [t["id"] for t in page["timers"]]
    cursor = page["next_cursor"]
    while cursor is not None:
        params = {"limit": 200, "sort": "created_at", "order": "asc", "cursor": cursor}
        page = client.get("/timers", params=params).json()["data"]
        seen += [t["id"] for t in page["timers"]]
        cursor = page["next_cursor"]
    assert seen == [str(t.id) for t in made]
    # By offset, the same page: its length says where the next one starts.
    by_offset = client.get("/timers", params={"limit": 200, "order": "asc"}).json()["data"]
    assert len(by_offset["timers"]) == len(first.json()["data"]["timers"])
    assert by_offset["next_cursor"] is not None
