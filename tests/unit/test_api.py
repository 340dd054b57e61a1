"""The REST API through HTTP (Starlette's test client) on the in-memory store; the same routes on
PostgreSQL: tests/integration/test_api.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.services import API_KEY
from timers.api import create_app
from timers.client import timer_from as client_timer
from timers.config import Settings
from timers.models import TimerStatus
from timers.storage import NewTimer, Outcome
from timers.testing import InMemoryStore

HOOK = "https://receiver.example/hook"


def future(seconds: float = 3600) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def timer_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "execute_at": future(),
        "callback_type": "http",
        "callback_config": {
            "type": "http",
            "url": HOOK,
            "headers": {"Authorization": "Bearer abc"},
            "payload": {"order": 42},
        },
        "metadata": {"tenant": "acme"},
    }
    body.update(overrides)
    return body


@pytest.fixture
def client(settings: Settings, store: InMemoryStore) -> Iterator[TestClient]:
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as c:
        yield c


def count_rows(store: InMemoryStore) -> int:
    return store.page(limit=200).total or 0


def create(client: TestClient, **overrides: Any) -> dict[str, Any]:
    response = client.post("/timers", json=timer_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()["data"]


# -- success paths -----------------------------------------------------------------------------


def test_create_returns_201_and_a_summary(client: TestClient, store: InMemoryStore) -> None:
    at = datetime.now(UTC) + timedelta(minutes=5)
    response = client.post("/timers", json=timer_body(execute_at=at.isoformat()))
    assert response.status_code == 201
    body = response.json()
    assert body["code"] == 0
    data = body["data"]
    assert data["status"] == "pending"
    assert datetime.fromisoformat(data["execute_at"]) == at
    timer_id = uuid.UUID(data["id"])
    assert timer_id.version == 7
    stored = store.get(timer_id)
    assert stored.callback_config["payload"] == {"order": 42}
    assert stored.metadata == {"tenant": "acme"}


def test_create_converts_offsets_to_utc(client: TestClient) -> None:
    data = create(client, execute_at="2030-06-01T16:03:07.250+02:00")
    full = client.get(f"/timers/{data['id']}").json()["data"]
    assert datetime.fromisoformat(full["execute_at"]) == datetime(
        2030, 6, 1, 14, 3, 7, 250000, tzinfo=UTC
    )


def test_get_returns_the_full_timer(client: TestClient, store: InMemoryStore) -> None:
    created = create(client)
    response = client.get(f"/timers/{created['id']}")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["id"] == created["id"]
    assert data["status"] == "pending"
    assert data["callback_type"] == "http"
    assert data["callback_config"]["url"] == HOOK
    # Header values are secrets: never shown, though they are kept and sent.
    assert data["callback_config"]["headers"] == {"Authorization": "***"}
    assert store.get(uuid.UUID(created["id"])).callback_config["headers"] == {
        "Authorization": "Bearer abc"
    }
    assert data["metadata"] == {"tenant": "acme"}
    assert data["last_error"] is None and data["executed_at"] is None


def test_claims_count_the_claims_and_attempts_is_their_deprecated_name(
    client: TestClient, store: InMemoryStore
) -> None:
    due = datetime.now(UTC) - timedelta(seconds=1)
    timer_id = store.create(NewTimer(due, "http", {"type": "http", "url": HOOK})).id
    [claimed] = store.claim_due([timer_id])
    store.release([(timer_id, claimed.claim)])
    store.claim_due([timer_id])
    data = client.get(f"/timers/{timer_id}").json()["data"]
    assert data["claims"] == data["attempts"] == 2
    assert data["delivery_attempts"] == 0  # claimed twice, never delivered
    listed = client.get("/timers").json()["data"]["timers"]
    assert listed[0]["claims"] == listed[0]["attempts"] == 2
    fields = client.get("/openapi.json").json()["components"]["schemas"]["TimerOut"]["properties"]
    assert fields["attempts"]["deprecated"] is True and "deprecated" not in fields["claims"]
    assert client_timer(data).claims == 2
    older_server = {k: v for k, v in data.items() if k != "claims"}
    assert client_timer(older_server).claims == 2


def test_list_filters_sorts_and_pages(client: TestClient, store: InMemoryStore) -> None:
    ids = [create(client, execute_at=future(3600 - i * 60))["id"] for i in range(5)]
    client.delete(f"/timers/{ids[0]}")
    everything = client.get("/timers", params={"total": "true"}).json()["data"]
    assert everything["total"] == 5 and everything["limit"] == 50 and everything["offset"] == 0
    # Default: newest first.
    assert [t["id"] for t in everything["timers"]] == list(reversed(ids))

    pending = client.get("/timers", params={"status": "pending", "total": "true"}).json()["data"]
    assert pending["total"] == 4
    assert {t["id"] for t in pending["timers"]} == set(ids[1:])

    by_due = client.get("/timers", params={"sort": "execute_at", "order": "asc"}).json()["data"]
    assert [t["id"] for t in by_due["timers"]] == list(reversed(ids))

    page = client.get(
        "/timers", params={"sort": "created_at", "order": "asc", "limit": 2, "offset": 2}
    ).json()["data"]
    assert [t["id"] for t in page["timers"]] == ids[2:4]
    assert page["total"] == 5 and page["total_exact"] is True  # counted by default
    assert page["limit"] == 2 and page["offset"] == 2
    uncounted = client.get("/timers", params={"limit": 2, "total": "false"}).json()["data"]
    assert uncounted["total"] is None and uncounted["total_exact"] is None


def test_list_by_cursor_metadata_time_and_kind(client: TestClient, store: InMemoryStore) -> None:
    acme = [
        create(client, execute_at=future(600 + i), metadata={"tenant": "acme", "n": i})["id"]
        for i in range(5)
    ]
    other = create(client, execute_at=future(700), metadata={"tenant": "other"})["id"]
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 2, "sort": "execute_at", "order": "asc"}
    for _ in range(10):
        data = client.get("/timers", params=params).json()["data"]
        seen += [t["id"] for t in data["timers"]]
        if data["next_cursor"] is None:
            break
        params["cursor"] = data["next_cursor"]
    assert seen == [*acme, other]
    tenant = client.get("/timers", params={"metadata": '{"tenant": "acme"}', "total": "true"})
    assert tenant.status_code == 200 and tenant.json()["data"]["total"] == 5
    window = client.get(
        "/timers",
        params={
            "execute_after": future(601),
            "execute_before": future(650),
            "callback_type": "http",
        },
    ).json()["data"]
    assert {t["id"] for t in window["timers"]} <= set(acme[1:]) and len(window["timers"]) >= 3
    assert client.get("/timers", params={"callback_type": "nats"}).json()["data"]["timers"] == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"metadata": "tenant=acme"}, "metadata: must be a JSON object"),
        ({"metadata": "[1]"}, "metadata: must be a JSON object"),
        ({"cursor": "garbage"}, "cursor: not a cursor"),
        ({"cursor": "x", "offset": 5}, "cursor: give either cursor or offset"),
        (
            {"execute_after": "2030-01-02T00:00:00Z", "execute_before": "2030-01-01T00:00:00Z"},
            "execute_before: must be later",
        ),
        ({"callback_type": "smtp"}, "callback_type"),
        ({"metadata": "{}"}, "metadata: give at least one key"),
        ({"metadata": "[" * 2000 + "]" * 2000}, "metadata: must be a JSON object"),
        ({"sort": "updated_at"}, "sort: updated_at needs a finished status"),
        ({"sort": "updated_at", "status": "pending"}, "sort: updated_at needs a finished status"),
        (
            {"cursor": "WyJjcmVhdGVkX2F0IiwiZGVzYyIsIjIwMzAtMDEtMDFUMDA6MDA6MDArMDA6MDAiLDVd"},
            "cursor: not a cursor",
        ),
    ],
)
def test_bad_list_filters_are_refused(
    client: TestClient, params: dict[str, str], message: str
) -> None:
    response = client.get("/timers", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 2 and message in response.json()["message"]


def test_a_cursor_continues_only_the_order_it_came_from(client: TestClient) -> None:
    for _ in range(3):
        create(client)
    cursor = client.get("/timers", params={"limit": 1}).json()["data"]["next_cursor"]
    wrong = client.get("/timers", params={"limit": 1, "cursor": cursor, "order": "asc"})
    assert wrong.status_code == 400 and "sort=created_at order=desc" in wrong.json()["message"]


def test_bulk_cancel_by_filter(client: TestClient, store: InMemoryStore) -> None:
    acme = [create(client, metadata={"tenant": "acme"})["id"] for _ in range(3)]
    other = create(client, metadata={"tenant": "other"})["id"]
    refused = client.post("/timers/cancel", json={})
    assert refused.status_code == 400 and '"all": true' in refused.json()["message"]
    answer = client.post("/timers/cancel", json={"metadata": {"tenant": "acme"}})
    assert answer.status_code == 200 and answer.json()["data"] == {"canceled": 3}
    assert {store.get(uuid.UUID(i)).status.value for i in acme} == {"canceled"}
    assert store.get(uuid.UUID(other)).status.value == "pending"
    every_tagged = client.post("/timers/cancel", json={"metadata": {}})
    assert every_tagged.status_code == 400 and "at least one key" in every_tagged.json()["message"]
    unknown = client.post("/timers/cancel", json={"tenant": "acme"})
    assert unknown.status_code == 400 and unknown.json()["code"] == 2
    everything = client.post("/timers/cancel", json={"all": True})
    assert everything.json()["data"] == {"canceled": 1}


def test_stats_and_metrics(client: TestClient) -> None:
    create(client)
    stats = client.get("/stats").json()["data"]
    assert stats["counts"]["pending"] == 1 and stats["counts_estimated"] is False
    assert stats["due_backlog"] == 0 and stats["lateness"] == []
    assert client.get("/stats", headers={"X-API-Key": "wrong"}).status_code == 401
    text = client.get("/metrics", headers={"X-API-Key": ""}).text
    assert 'timers_api_requests_total{code="201",method="POST",route="/timers"} 1.0' in text
    assert 'route="/stats"' in text and "/timers/0" not in text
    for n in range(5):  # any token is a method to HTTP/1.1: they share one series
        client.request(f"BOGUS{n}", "/health")
    text = client.get("/metrics").text
    assert "BOGUS" not in text and 'method="other",route="/health"' in text


def test_update_changes_a_pending_timer(client: TestClient, store: InMemoryStore) -> None:
    created = create(client)
    before = store.get(uuid.UUID(created["id"]))
    new_at = datetime.now(UTC) + timedelta(hours=2)
    response = client.put(
        f"/timers/{created['id']}",
        json={"execute_at": new_at.isoformat(), "metadata": {"tenant": "other"}},
    )
    assert response.status_code == 200, response.text
    after = store.get(uuid.UUID(created["id"]))
    assert after.execute_at == new_at
    assert after.metadata == {"tenant": "other"}
    assert after.callback_config == before.callback_config
    assert after.updated_at > before.updated_at


def test_update_replaces_the_callback_config(client: TestClient) -> None:
    created = create(client)
    new_config = {"type": "http", "url": "http://127.0.0.1:9/x", "payload": [1, 2]}
    response = client.put(f"/timers/{created['id']}", json={"callback_config": new_config})
    assert response.status_code == 200, response.text
    data = client.get(f"/timers/{created['id']}").json()["data"]
    assert data["callback_config"]["url"] == "http://127.0.0.1:9/x"
    assert data["callback_config"]["payload"] == [1, 2]


def test_update_with_null_metadata_clears_it(client: TestClient) -> None:
    created = create(client)
    assert client.put(f"/timers/{created['id']}", json={"metadata": None}).status_code == 200
    assert client.get(f"/timers/{created['id']}").json()["data"]["metadata"] is None


def test_delete_cancels_a_pending_timer(client: TestClient, store: InMemoryStore) -> None:
    created = create(client)
    response = client.delete(f"/timers/{created['id']}")
    assert response.status_code == 200
    assert response.json()["data"] == {"id": created["id"], "status": "canceled"}
    assert store.get(uuid.UUID(created["id"])).status.value == "canceled"


def test_health_is_up_without_a_key(settings: Settings, store: InMemoryStore) -> None:
    with TestClient(create_app(settings, store=store)) as anonymous:
        response = anonymous.get("/health")
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "up"
    assert response.json()["data"]["database"] == "connected"


def test_openapi_is_served(client: TestClient) -> None:
    assert client.get("/openapi.json").json()["paths"]["/timers"]
    assert client.get("/docs").status_code == 200


# -- bad input: 400, code 2, the field named, nothing changed -----------------------------------


def assert_rejected(response: Any, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 2
    assert field in body["message"], body["message"]


BAD_CREATES = [
    ("past", {"execute_at": "2020-01-01T00:00:00Z"}, "execute_at"),
    ("naive", {"execute_at": "2030-01-01T00:00:00"}, "execute_at"),
    ("not a date", {"execute_at": "tomorrow"}, "execute_at"),
    ("missing callback_config", {"callback_config": None}, "callback_config"),
    ("callback_type ftp", {"callback_type": "ftp"}, "callback_type"),
    ("type mismatch", {"callback_config": {"type": "grpc", "url": HOOK}}, "callback_config.type"),
    ("relative url", {"callback_config": {"url": "/hook"}}, "callback_config.url"),
    ("ftp url", {"callback_config": {"url": "ftp://example.com/x"}}, "callback_config.url"),
    ("javascript url", {"callback_config": {"url": "javascript:alert(1)"}}, "callback_config.url"),
    ("no host", {"callback_config": {"url": "http:///path"}}, "callback_config.url"),
    ("missing url", {"callback_config": {"payload": 1}}, "callback_config.url"),
    (
        "header with space",
        {"callback_config": {"url": HOOK, "headers": {"X Bad": "v"}}},
        "callback_config.headers",
    ),
    (
        "header with colon",
        {"callback_config": {"url": HOOK, "headers": {"X:Bad": "v"}}},
        "callback_config.headers",
    ),
    (
        "header with newline",
        {"callback_config": {"url": HOOK, "headers": {"X\nBad": "v"}}},
        "callback_config.headers",
    ),
    (
        "header value not a string",
        {"callback_config": {"url": HOOK, "headers": {"X-N": 5}}},
        "callback_config.headers.X-N",
    ),
    (
        "header value with newline",
        {"callback_config": {"url": HOOK, "headers": {"X-N": "a\r\nInjected: 1"}}},
        "callback_config.headers.X-N",
    ),
    (
        "headers not an object",
        {"callback_config": {"url": HOOK, "headers": ["a"]}},
        "callback_config.headers",
    ),
    ("unknown field", {"execute_when": "now"}, "execute_when"),
]


@pytest.mark.parametrize(
    ("case", "overrides", "field"), BAD_CREATES, ids=[c[0] for c in BAD_CREATES]
)
def test_create_rejects_bad_input(
    client: TestClient, store: InMemoryStore, case: str, overrides: dict[str, Any], field: str
) -> None:
    body = timer_body(**overrides)
    if body["callback_config"] is None:
        del body["callback_config"]
    assert_rejected(client.post("/timers", json=body), field)
    assert count_rows(store) == 0


def test_create_rejects_a_body_over_64_kib(client: TestClient, store: InMemoryStore) -> None:
    body = timer_body(callback_config={"url": HOOK, "payload": "x" * 70_000})
    assert_rejected(client.post("/timers", json=body), "body")
    assert count_rows(store) == 0


def test_create_rejects_a_chunked_body_over_64_kib(
    client: TestClient, store: InMemoryStore
) -> None:
    import json

    raw = json.dumps(timer_body(callback_config={"url": HOOK, "payload": "x" * 70_000})).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 8192):
            yield raw[i : i + 8192]

    response = client.post(
        "/timers", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_rejected(response, "body")
    assert count_rows(store) == 0


def test_create_accepts_a_body_just_under_64_kib(client: TestClient) -> None:
    body = timer_body(callback_config={"url": HOOK, "payload": "x" * 60_000})
    assert client.post("/timers", json=body).status_code == 201


def test_create_rejects_malformed_json(client: TestClient, store: InMemoryStore) -> None:
    response = client.post(
        "/timers", content=b'{"execute_at": ', headers={"Content-Type": "application/json"}
    )
    assert_rejected(response, "JSON")
    assert count_rows(store) == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"offset": -1}, "offset"),
        ({"sort": "status"}, "sort"),
        ({"order": "sideways"}, "order"),
        ({"status": "sleeping"}, "status"),
        ({"limit": "ten"}, "limit"),
    ],
)
def test_list_rejects_bad_parameters(
    client: TestClient, params: dict[str, Any], field: str
) -> None:
    assert_rejected(client.get("/timers", params=params), field)


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_malformed_uuid_in_path_is_400(client: TestClient, method: str) -> None:
    kwargs: dict[str, Any] = {"json": {"metadata": {}}} if method == "put" else {}
    assert_rejected(getattr(client, method)("/timers/not-a-uuid", **kwargs), "timer_id")


def test_update_validates_like_create(client: TestClient, store: InMemoryStore) -> None:
    created = create(client)
    before = store.get(uuid.UUID(created["id"]))
    for body, field in [
        ({"execute_at": "2020-01-01T00:00:00Z"}, "execute_at"),
        ({"execute_at": "2030-01-01T00:00:00"}, "execute_at"),
        ({"execute_at": None}, "execute_at"),
        ({"callback_config": {"url": "ftp://x"}}, "callback_config.url"),
        ({"callback_type": "smtp"}, "callback_type"),
        ({}, "body"),
    ]:
        assert_rejected(client.put(f"/timers/{created['id']}", json=body), field)
    assert store.get(uuid.UUID(created["id"])) == before


# -- auth, not found, wrong state ---------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_missing_or_wrong_key_is_401(
    settings: Settings, store: InMemoryStore, key: str | None
) -> None:
    headers = {} if key is None else {"X-API-Key": key}
    with TestClient(create_app(settings, store=store), headers=headers) as anonymous:
        for response in (
            anonymous.post("/timers", json=timer_body()),
            anonymous.get("/timers"),
            anonymous.get(f"/timers/{uuid.uuid4()}"),
            anonymous.delete(f"/timers/{uuid.uuid4()}"),
        ):
            assert response.status_code == 401
            assert response.json()["code"] == 4
    assert count_rows(store) == 0


def test_unknown_id_is_404(client: TestClient) -> None:
    missing = uuid.uuid4()
    for response in (
        client.get(f"/timers/{missing}"),
        client.put(f"/timers/{missing}", json={"metadata": {}}),
        client.put(f"/timers/{missing}", json={"callback_config": {"url": HOOK}}),
        client.delete(f"/timers/{missing}"),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == 3
        assert str(missing) in response.json()["message"]


def test_unknown_route_is_404_in_the_envelope(client: TestClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404 and response.json()["code"] == 3


@pytest.mark.parametrize("status", ["executing", "completed", "failed", "canceled"])
def test_update_and_cancel_of_a_timer_that_is_not_pending_is_400(
    client: TestClient, store: InMemoryStore, status: str
) -> None:
    created = create(client)
    timer_id = uuid.UUID(created["id"])
    force_status(store, timer_id, status)
    before = store.get(timer_id)
    for response in (
        client.put(f"/timers/{timer_id}", json={"metadata": {"x": 1}}),
        client.delete(f"/timers/{timer_id}"),
    ):
        assert_rejected(response, status)
        assert response.json()["data"] == {"id": str(timer_id), "status": status}
        assert response.json()["message"].startswith(f"timer {timer_id} is {status}")
    assert store.get(timer_id) == before


def force_status(store: InMemoryStore, timer_id: uuid.UUID, status: str) -> None:
    # Test setup only: put a row in a state the API cannot reach on its own.
    store._timers[timer_id] = replace(store._timers[timer_id], status=TimerStatus(status))


# -- batch --------------------------------------------------------------------------------------


def test_batch_creates_all_timers_in_order(client: TestClient, store: InMemoryStore) -> None:
    bodies = [timer_body(metadata={"n": i}) for i in range(1000)]
    response = client.post("/timers/batch", json={"timers": bodies})
    assert response.status_code == 201, response.text[:500]
    created = response.json()["data"]["timers"]
    assert len(created) == 1000
    assert [store.get(uuid.UUID(t["id"])).metadata for t in created[:3]] == [
        {"n": 0},
        {"n": 1},
        {"n": 2},
    ]
    assert count_rows(store) == 1000


def test_batch_is_all_or_nothing_and_names_the_bad_item(
    client: TestClient, store: InMemoryStore
) -> None:
    bodies = [timer_body() for _ in range(10)]
    bodies[7]["callback_config"] = {"url": "ftp://nope"}
    assert_rejected(
        client.post("/timers/batch", json={"timers": bodies}), "timers[7].callback_config.url"
    )
    bodies[7] = timer_body(execute_at="2030-01-01T00:00:00")
    assert_rejected(client.post("/timers/batch", json={"timers": bodies}), "timers[7].execute_at")
    assert count_rows(store) == 0


@pytest.mark.parametrize("size", [0, 1001])
def test_batch_size_is_bounded(client: TestClient, store: InMemoryStore, size: int) -> None:
    response = client.post("/timers/batch", json={"timers": [timer_body()] * size})
    assert_rejected(response, "timers")
    assert count_rows(store) == 0


def test_a_timer_is_redriven_at_most_ten_times(client: TestClient, store: InMemoryStore) -> None:
    config = {"type": "http", "url": HOOK}
    timer_id = store.create(NewTimer(datetime.now(UTC), "http", config)).id

    def fail() -> None:
        [claimed] = store.claim_due([timer_id])
        store.begin_deliveries([(timer_id, claimed.claim)], lease=60)
        attempt = {"attempt": 1, "started_at": datetime.now(UTC).isoformat(), "duration_ms": 1}
        entry = {**attempt, "outcome": "failed", "status": 500, "error": "HTTP 500"}
        store.finish_many([Outcome(timer_id, claimed.claim, "HTTP 500", None, entry)])

    for _ in range(10):
        fail()
        assert client.post(f"/timers/{timer_id}/retry").status_code == 200
    fail()
    refused = client.post(f"/timers/{timer_id}/retry")
    assert refused.status_code == 400, refused.text
    answer = refused.json()
    assert answer["code"] == 2 and "redriven 10 times" in answer["message"], answer
    assert store.get(timer_id).status.value == "failed"
