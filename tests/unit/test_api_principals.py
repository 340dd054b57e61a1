"""Keys are tenants: each principal (`API_KEYS` entries `name:key`; unnamed keys are `default`)
sees and changes only its own timers, another's id is a 404 as if it did not exist, admins
(`TIMERS_ADMINS`) see all, and a quota bounds each principal's pending timers. The real API on
the in-memory store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings, settings_from_env
from timers.models import TimerStatus
from timers.storage import NewTimer
from timers.testing import InMemoryStore

SHOP = "shop:" + "s" * 40
SHOP_ROTATED = "shop:" + "r" * 40
BILLING = "billing:" + "b" * 40
OPS = "ops:" + "o" * 40


def key(entry: str) -> dict[str, str]:
    return {"X-API-Key": entry.partition(":")[2]}


def body(**extra: Any) -> dict[str, Any]:
    return {
        "execute_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "callback_config": {"type": "http", "url": "https://receiver.example/hook"},
        **extra,
    }


@pytest.fixture
def client(store: InMemoryStore, database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        api_key=API_KEY,
        extra_api_keys=(SHOP, SHOP_ROTATED, BILLING, OPS),
        admins=("ops",),
        max_pending_per_key=5,
    )
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as c:
        yield c


def create(client: TestClient, entry: str, **extra: Any) -> str:
    response = client.post("/timers", json=body(**extra), headers=key(entry))
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def test_another_principals_timer_is_invisible_and_untouchable(
    client: TestClient, store: InMemoryStore
) -> None:
    theirs = create(client, SHOP, metadata={"team": "shop"})
    billing = key(BILLING)
    for method, path, payload in [
        ("GET", f"/timers/{theirs}", None),
        ("PUT", f"/timers/{theirs}", {"callback_config": {"url": "https://evil.example/x"}}),
        ("DELETE", f"/timers/{theirs}", None),
        ("POST", f"/timers/{theirs}/retry", None),
    ]:
        response = client.request(method, path, json=payload, headers=billing)
        assert response.status_code == 404, (method, response.text)
        assert response.json()["code"] == 3
        assert response.json()["message"] == f"timer {theirs} not found"
    listed = client.get("/timers", params={"total": "true"}, headers=billing).json()["data"]
    assert listed["timers"] == [] and listed["total"] == 0
    by_label = client.get("/timers", params={"metadata": '{"team":"shop"}'}, headers=billing)
    assert by_label.json()["data"]["timers"] == [] and by_label.json()["data"]["total"] == 0
    timer = store.get(__import__("uuid").UUID(theirs))
    assert timer.status is TimerStatus.PENDING
    assert timer.callback_config["url"] == "https://receiver.example/hook"
    # Its own keys (both of a rotation) reach it.
    for entry in (SHOP, SHOP_ROTATED):
        assert client.get(f"/timers/{theirs}", headers=key(entry)).status_code == 200


def test_cancel_all_cancels_only_the_callers_timers(
    client: TestClient, store: InMemoryStore
) -> None:
    shop = [create(client, SHOP) for _ in range(2)]
    billing = [create(client, BILLING) for _ in range(3)]
    response = client.post("/timers/cancel", json={"all": True}, headers=key(BILLING))
    assert response.json()["data"] == {"canceled": 3}
    for timer_id in shop:
        assert client.get(f"/timers/{timer_id}", headers=key(SHOP)).json()["data"]["status"] == (
            "pending"
        )
    for timer_id in billing:
        got = client.get(f"/timers/{timer_id}", headers=key(BILLING)).json()["data"]
        assert got["status"] == "canceled"


def test_an_admin_sees_and_changes_every_principals_timers(client: TestClient) -> None:
    shop, billing = create(client, SHOP), create(client, BILLING)
    admin = key(OPS)
    listed = client.get("/timers", params={"total": "true"}, headers=admin).json()["data"]
    assert {t["id"] for t in listed["timers"]} == {shop, billing}
    assert client.delete(f"/timers/{shop}", headers=admin).status_code == 200
    # The unnamed API_KEY is the principal `default`: no admin, sees neither.
    assert client.get(f"/timers/{billing}", headers={"X-API-Key": API_KEY}).status_code == 404
    cancel_all = client.post("/timers/cancel", json={"all": True}, headers=admin)
    assert cancel_all.json()["data"] == {"canceled": 1}  # billing's; shop's was canceled


def test_a_principals_quota_of_pending_timers_is_a_429_and_stores_nothing(
    client: TestClient, store: InMemoryStore
) -> None:
    for _ in range(4):
        create(client, SHOP)
    batch = {"timers": [body(), body()]}
    response = client.post("/timers/batch", json=batch, headers=key(SHOP))
    assert response.status_code == 429, response.text
    assert response.json()["code"] == 2
    assert "quota" in response.json()["message"]
    assert store.page().total == 4
    create(client, SHOP)  # the fifth fits
    refused = client.post("/timers", json=body(), headers=key(SHOP))
    assert refused.status_code == 429 and store.page().total == 5
    create(client, BILLING)  # another principal's quota is its own
    # A canceled timer frees its place.
    client.post("/timers/cancel", json={"all": True}, headers=key(SHOP))
    create(client, SHOP)


def test_timers_made_before_principals_belong_to_default(
    client: TestClient, store: InMemoryStore
) -> None:
    old = store.create(NewTimer(datetime.now(UTC) + timedelta(hours=1), "http", {"url": "x"}))
    got = client.get(f"/timers/{old.id}", headers={"X-API-Key": API_KEY})
    assert got.status_code == 200
    assert client.get(f"/timers/{old.id}", headers=key(SHOP)).status_code == 404


def test_api_keys_name_their_principals() -> None:
    settings = settings_from_env(
        {
            "API_KEY": "k" * 32,
            "API_KEYS": f"{'u' * 32}, {SHOP}, {SHOP_ROTATED}",
            "TIMERS_ADMINS": "shop",
        }
    )
    assert settings.principals == {
        "k" * 32: "default",
        "u" * 32: "default",
        "s" * 40: "shop",
        "r" * 40: "shop",
    }
    assert settings.require_api_keys() == tuple(settings.principals)
    assert settings.admins == ("shop",)
