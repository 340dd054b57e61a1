"""Idempotent create over the REST API, on the in-memory store: `Idempotency-Key` on
`POST /timers` and a `key` per item of `POST /timers/batch`. A retry answers 200 with the first
timer; a different request under the same key is refused; keys are per API key. Racing requests
against PostgreSQL are in tests/integration/test_idempotency.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings
from timers.testing import InMemoryStore

OTHER_KEY = "another-api-key-0123456789abcdefghijkl"
DUE = datetime.now(UTC) + timedelta(days=1)


def timer_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "execute_at": DUE.isoformat(),
        "callback_config": {"url": "https://receiver.example/hook", "payload": {"order": 42}},
        "metadata": {"tenant": "acme"},
    }
    body.update(overrides)
    return body


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(store: InMemoryStore, database_url: str, clock: Clock) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, api_key=API_KEY, extra_api_keys=(OTHER_KEY,))
    app = create_app(settings, store=store, clock=clock)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as c:
        yield c


def post(client: TestClient, key: str, body: dict[str, Any], api_key: str = API_KEY) -> Any:
    return client.post("/timers", json=body, headers={"Idempotency-Key": key, "X-API-Key": api_key})


def rows(store: InMemoryStore) -> list[dict[str, Any]]:
    """The twin's rows as `SELECT id, idempotency_key, api_key_hash, request_hash FROM timers`
    reads them (its unique index on (api_key_hash, idempotency_key) holds the key's columns)."""
    keyed = {
        timer_id: {"idempotency_key": key, "api_key_hash": api_hash, "request_hash": request}
        for (api_hash, key), (timer_id, request) in store._keys.items()
    }
    empty = {"idempotency_key": None, "api_key_hash": None, "request_hash": None}
    return [{"id": t_id, **keyed.get(t_id, empty)} for t_id in store._timers]


def test_a_retry_with_the_same_key_and_body_answers_200_with_the_first_timer(
    client: TestClient, store: InMemoryStore
) -> None:
    first = post(client, "order-42-expiry", timer_body())
    assert first.status_code == 201, first.text
    again = post(client, "order-42-expiry", timer_body())
    assert again.status_code == 200, again.text
    assert again.json()["code"] == 0
    assert again.json()["data"] == first.json()["data"]
    [row] = rows(store)
    assert str(row["id"]) == first.json()["data"]["id"]
    assert row["idempotency_key"] == "order-42-expiry"
    # The API key itself is never stored, only a hash of it.
    assert row["api_key_hash"] == hashlib.sha256(API_KEY.encode()).hexdigest()
    assert API_KEY not in str(row)


def test_the_same_request_spelled_differently_is_the_same_request(
    client: TestClient, store: InMemoryStore
) -> None:
    first = post(client, "k1", timer_body())
    spelled = {
        "metadata": {"tenant": "acme"},
        "callback_type": "http",
        "callback_config": {
            "payload": {"order": 42},
            "headers": {},
            "type": "http",
            "url": "https://receiver.example/hook",
        },
        "execute_at": DUE.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace("Z", "+00:00"),
    }
    again = post(client, "k1", spelled)
    assert again.status_code == 200, again.text
    assert again.json()["data"]["id"] == first.json()["data"]["id"]
    assert len(rows(store)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"metadata": {"tenant": "other"}},
        {"execute_at": (DUE + timedelta(seconds=1)).isoformat()},
        {"callback_config": {"url": "https://receiver.example/hook", "payload": {"order": 43}}},
    ],
)
def test_the_same_key_with_another_body_is_refused(
    client: TestClient, store: InMemoryStore, change: dict[str, Any]
) -> None:
    first = post(client, "k1", timer_body())
    refused = post(client, "k1", timer_body(**change))
    assert refused.status_code == 400, refused.text
    answer = refused.json()
    assert answer["code"] == 2
    assert answer["message"].startswith("Idempotency-Key: Idempotency-Key 'k1' was already used")
    assert "different request" in answer["message"]
    assert answer["data"] == {"id": first.json()["data"]["id"]}
    assert len(rows(store)) == 1


def test_keys_are_per_api_key(client: TestClient, store: InMemoryStore) -> None:
    mine = post(client, "k1", timer_body(), api_key=API_KEY)
    theirs = post(client, "k1", timer_body(), api_key=OTHER_KEY)
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["data"]["id"] != theirs.json()["data"]["id"]
    assert (
        post(client, "k1", timer_body(), api_key=OTHER_KEY).json()["data"]
        == (theirs.json()["data"])
    )
    assert len(rows(store)) == 2


def test_without_a_key_every_create_makes_a_timer(client: TestClient, store: InMemoryStore) -> None:
    for _ in range(2):
        assert client.post("/timers", json=timer_body()).status_code == 201
    assert [r["idempotency_key"] for r in rows(store)] == [None, None]


def test_a_retry_after_the_timers_time_has_passed_still_answers_200(
    client: TestClient, store: InMemoryStore, clock: Clock
) -> None:
    soon = timer_body(execute_at=(clock.now + timedelta(seconds=2)).isoformat())
    first = post(client, "k-soon", soon)
    assert first.status_code == 201
    clock.now += timedelta(minutes=5)
    again = post(client, "k-soon", soon)
    assert again.status_code == 200, again.text
    assert again.json()["data"]["id"] == first.json()["data"]["id"]
    # A new key with a time in the past is refused as ever, and so is another body.
    assert post(client, "k-new", soon).status_code == 400
    assert post(client, "k-soon", {**soon, "metadata": None}).status_code == 400
    assert len(rows(store)) == 1


@pytest.mark.parametrize("key", ["", " ", "with space", "tab\there", "é", "x" * 256])
def test_keys_must_be_1_to_255_visible_ascii_characters(
    client: TestClient, store: InMemoryStore, key: str
) -> None:
    # As bytes: a header the client sends as it is (text would be refused before it is sent).
    raw: Any = {"Idempotency-Key": key.encode()}
    response = client.post("/timers", json=timer_body(), headers=raw)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 2
    assert response.json()["message"].startswith("Idempotency-Key: ")
    assert rows(store) == []
    assert post(client, "x" * 255, timer_body()).status_code == 201
    assert post(client, "!~", timer_body()).status_code == 201


# -- batches ---------------------------------------------------------------------------------


def batch(client: TestClient, items: list[dict[str, Any]], api_key: str = API_KEY) -> Any:
    return client.post("/timers/batch", json={"timers": items}, headers={"X-API-Key": api_key})


def ids(response: Any) -> list[str]:
    return [t["id"] for t in response.json()["data"]["timers"]]


def test_batch_items_with_keys_are_made_once(client: TestClient, store: InMemoryStore) -> None:
    items = [timer_body(key="a"), timer_body(key="b", metadata={"n": 2}), timer_body()]
    first = batch(client, items)
    assert first.status_code == 201, first.text
    assert len(rows(store)) == 3
    # Only the unkeyed item is made again: the batch answers 201, the keyed ones as before.
    again = batch(client, items)
    assert again.status_code == 201
    assert ids(again)[:2] == ids(first)[:2] and ids(again)[2] != ids(first)[2]
    assert len(rows(store)) == 4
    # All keyed and all made before: 200, nothing new.
    only_keyed = batch(client, items[:2])
    assert only_keyed.status_code == 200, only_keyed.text
    assert ids(only_keyed) == ids(first)[:2]
    # A key made by a single create is the same key in a batch (same API key).
    single = post(client, "c", timer_body(metadata={"n": 3}))
    mixed = batch(client, [timer_body(key="c", metadata={"n": 3}), timer_body(key="d")])
    assert mixed.status_code == 201 and ids(mixed)[0] == single.json()["data"]["id"]
    assert len(rows(store)) == 6


def test_a_batch_reusing_a_key_for_another_body_makes_nothing(
    client: TestClient, store: InMemoryStore
) -> None:
    batch(client, [timer_body(key="a")])
    refused = batch(client, [timer_body(key="new"), timer_body(key="a", metadata={"other": 1})])
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == 2
    assert refused.json()["message"].startswith("timers[1].key: Idempotency-Key 'a' was already")
    assert len(rows(store)) == 1  # all or nothing: "new" was not made either
    # The same key twice in one batch: one timer, for the same body; refused for different ones.
    twice = batch(client, [timer_body(key="t"), timer_body(key="t")])
    assert twice.status_code == 201 and len(set(ids(twice))) == 1
    clash = batch(client, [timer_body(key="u"), timer_body(key="u", metadata=None)])
    assert clash.status_code == 400 and clash.json()["message"].startswith("timers[1].key: ")
    assert len(rows(store)) == 2


def test_batch_keys_are_per_api_key_and_validated(client: TestClient, store: InMemoryStore) -> None:
    mine = batch(client, [timer_body(key="a")])
    theirs = batch(client, [timer_body(key="a")], api_key=OTHER_KEY)
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert ids(mine) != ids(theirs)
    bad = batch(client, [timer_body(key="a b")])
    assert bad.status_code == 400 and bad.json()["message"].startswith("timers[0].key: ")
    assert len(rows(store)) == 2
