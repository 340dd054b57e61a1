"""Safe to put in front of other teams: what the API refuses (each a 400 naming the field, with
nothing stored), what it never shows, and whose keys it takes. On the in-memory store (what needs
PostgreSQL is in tests/integration/test_security.py); the app runs with the shipped outbound policy
(public addresses only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings
from timers.storage import StoreError
from timers.testing import InMemoryStore

OTHER_KEY = "another-key-for-rotation-0123456789abcdef"


def body(url: str = "https://receiver.example/hook", **config: Any) -> dict[str, Any]:
    return {
        "execute_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "callback_type": "http",
        "callback_config": {"type": "http", "url": url, **config},
    }


@pytest.fixture
def client(store: InMemoryStore, database_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, api_key=API_KEY, extra_api_keys=(OTHER_KEY,))
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as c:
        yield c


def refused(client: TestClient, store: InMemoryStore, payload: Any, field: str) -> str:
    """POST raw JSON text or an object; assert a 400 (code 2) naming `field`, nothing stored."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    response = client.post("/timers", content=text, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == 2
    assert answer["message"].startswith(field), answer["message"]
    assert store.page().total == 0
    return str(answer["message"])


@pytest.fixture
def celery_client(store: InMemoryStore, settings: Settings) -> Iterator[TestClient]:
    """The API with a task broker and the shop's allow-lists (tasks `shop.tasks.*`, queues `shop`
    and `celery`)."""
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as c:
        yield c


def task_body(**config: Any) -> dict[str, Any]:
    return {
        "execute_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "callback_type": "celery",
        "callback_config": {"type": "celery", "task": "shop.tasks.expire_order", **config},
    }


def test_celery_callbacks_are_refused_without_a_task_broker(
    client: TestClient, store: InMemoryStore
) -> None:
    message = refused(client, store, task_body(queue="shop"), "callback_type")
    assert "celery callbacks are off: set TIMERS_TASK_BROKER_URL" in message


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"task": "billing.charge"}, "callback_config.task"),
        ({"task": "Shop.tasks.expire_order"}, "callback_config.task"),
        ({"task": "celery.backend_cleanup"}, "callback_config.task"),
        ({"task": "timers.execute_callbacks"}, "callback_config.task"),
        ({"queue": "other"}, "callback_config.queue"),
        ({"queue": "timers"}, "callback_config.queue"),
        ({"queue": "celery.pidbox"}, "callback_config.queue"),
        ({"queue": "unacked"}, "callback_config.queue"),
        ({"queue": "unacked_index"}, "callback_config.queue"),
        ({"queue": "_kombu.binding.shop"}, "callback_config.queue"),
        ({"args": ["x" * (33 * 1024)]}, "callback_config"),
        ({"headers": {f"h{i}": "v" for i in range(33)}}, "callback_config.headers"),
        ({"headers": {"tenant": "v" * 5000}}, "callback_config.headers"),
    ],
)
def test_celery_callbacks_outside_the_allow_lists_are_refused(
    celery_client: TestClient, store: InMemoryStore, config: dict[str, Any], field: str
) -> None:
    refused(celery_client, store, task_body(**config), field)


def test_a_celery_callback_on_the_allow_lists_is_taken_and_can_not_be_moved_off_them(
    celery_client: TestClient, store: InMemoryStore
) -> None:
    response = celery_client.post("/timers", json=task_body(args=[42]))  # queue `celery`
    assert response.status_code == 201, response.text
    timer_id = response.json()["data"]["id"]
    update = {"callback_config": {"type": "celery", "task": "shop.tasks.x", "queue": "timers"}}
    response = celery_client.put(f"/timers/{timer_id}", json=update)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("callback_config.queue")
    shown = celery_client.get(f"/timers/{timer_id}").json()["data"]
    assert shown["callback_config"] == {
        "type": "celery", "task": "shop.tasks.expire_order", "args": [42], "kwargs": {}
    }  # fmt: skip


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:5555/api/workers", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://localhost:8080/", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.10/", "private"),
        ("http://100.64.0.1/", "CGNAT"),
        ("http://[fd00::1]/", "unique-local"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://[2002:7f00:1::]/", "loopback"),
        ("http://0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://user:pw@receiver.example/hook", "credentials"),
    ],
)
def test_callbacks_to_internal_addresses_are_refused(
    client: TestClient, store: InMemoryStore, url: str, why: str
) -> None:
    message = refused(client, store, body(url), "callback_config.url")
    assert why in message


@pytest.mark.parametrize(
    ("retry", "field"),
    [
        ({"max_attempts": 26}, "retry.max_attempts"),
        ({"max_attempts": 100, "initial_delay": 1}, "retry.max_attempts"),
        ({"max_attempts": 5, "initial_delay": 0}, "retry.initial_delay"),
        ({"max_attempts": 5, "initial_delay": 0.5}, "retry.initial_delay"),
        ({"max_attempts": 5, "max_delay": 0.5}, "retry.max_delay"),
    ],
)
def test_retry_policies_that_would_amplify_a_callback_are_refused(
    client: TestClient, store: InMemoryStore, retry: dict[str, Any], field: str
) -> None:
    refused(client, store, {**body(), "retry": retry}, field)


@pytest.mark.parametrize(
    "header", ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "TE"]
)
def test_framing_and_hop_by_hop_headers_are_refused(
    client: TestClient, store: InMemoryStore, header: str
) -> None:
    refused(client, store, body(headers={header: "x"}), f"callback_config.headers.{header}")


@pytest.mark.parametrize("header", ["webhook-id", "Webhook-Timestamp", "WEBHOOK-SIGNATURE"])
def test_signature_headers_are_refused(
    client: TestClient, store: InMemoryStore, header: str
) -> None:
    message = refused(client, store, body(headers={header: "x"}), "callback_config.headers")
    assert f"{header} is set by the service" in message


@pytest.mark.parametrize("value", ["café", "a\u20acb", "line\nbreak", "nul\u0000"])
def test_header_values_that_cant_go_on_the_wire_are_refused(
    client: TestClient, store: InMemoryStore, value: str
) -> None:
    refused(client, store, body(headers={"X-Note": value}), "callback_config.headers")


def test_json_that_postgresql_or_the_wire_cant_hold_is_refused(
    client: TestClient, store: InMemoryStore
) -> None:
    deep: Any = "leaf"
    for _ in range(300):
        deep = [deep]
    refused(client, store, body(payload=deep), "callback_config.payload")
    base = json.dumps(body())
    for raw, field in [
        (base.replace('"https://receiver.example/hook"', '"https://r.example/", "payload": NaN'),
         "callback_config.payload"),
        (base.replace('"https://receiver.example/hook"', '"https://r.example/", "payload": -Infinity'),
         "callback_config.payload"),
        (base.replace('"https://receiver.example/hook"', '"https://r.example/", "payload": "a\\u0000b"'),
         "callback_config.payload"),
        (base.replace('"https://receiver.example/hook"', '"https://r.example/", "payload": "\\ud800"'),
         "callback_config.payload"),
        (base[:-1] + ', "metadata": {"k": "\\u0000"}}', "metadata"),
    ]:  # fmt: skip
        refused(client, store, raw, field)


@pytest.mark.parametrize(
    "execute_at",
    ["9999-12-31T23:00:00-05:00", "2099-01-01T00:00:00Z", 1893456000, 1.5, True, None],
)
def test_execute_at_must_be_iso_text_within_the_max_delay(
    client: TestClient, store: InMemoryStore, execute_at: Any
) -> None:
    refused(client, store, {**body(), "execute_at": execute_at}, "execute_at")


def test_an_offset_beyond_any_page_is_a_400_not_a_database_error(client: TestClient) -> None:
    response = client.get("/timers", params={"offset": "60223364063984246784"})
    assert response.status_code == 400
    assert response.json()["code"] == 2 and response.json()["message"].startswith("offset")


def test_a_statement_the_database_refuses_is_an_internal_error_not_unavailability() -> None:
    class Refusing(InMemoryStore):
        def page(self, **_: Any) -> Any:
            raise StoreError("value out of range for type bigint")

    app = create_app(Settings(api_key=API_KEY), store=Refusing())
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as c:
        response = c.get("/timers")
    assert response.status_code == 500
    assert response.json() == {"code": 1, "message": "internal error", "data": None}


def test_header_values_are_never_shown(client: TestClient, store: InMemoryStore) -> None:
    secret = {"Authorization": "Bearer s3cr3t", "X-Tenant": "acme"}
    created = client.post("/timers", json=body(headers=secret)).json()["data"]
    for response in (client.get(f"/timers/{created['id']}"), client.get("/timers")):
        assert "s3cr3t" not in response.text and "acme" not in response.text
    shown = client.get(f"/timers/{created['id']}").json()["data"]["callback_config"]["headers"]
    assert shown == {"Authorization": "***", "X-Tenant": "***"}
    changed = client.put(
        f"/timers/{created['id']}",
        json={"callback_config": {"url": "https://r.example/", "headers": secret}},
    )
    assert changed.status_code == 200 and "s3cr3t" not in changed.text


def test_several_keys_work_at_once_for_rotation(client: TestClient) -> None:
    for key in (API_KEY, OTHER_KEY):
        assert client.get("/timers", headers={"X-API-Key": key}).status_code == 200
    wrong = client.get("/timers", headers={"X-API-Key": OTHER_KEY[:-1] + "X"})
    assert wrong.status_code == 401 and wrong.json()["code"] == 4
