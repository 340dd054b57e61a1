"""The /schedules routes through HTTP, and the Python API's schedules, on the in-memory store (its
schedules held to PostgreSQL's contract by tests/contract/test_schedule_store.py); one tour of the
routes on PostgreSQL: tests/integration/test_schedules_api.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings
from timers.testing import InMemoryStore

HOOK = "https://receiver.example/hook"


def body(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cron": "*/5 * * * *",
        "timezone": "Europe/Paris",
        "callback_type": "http",
        "callback_config": {"type": "http", "url": HOOK, "headers": {"X-A": "secret"}},
    }
    out.update(overrides)
    return out


@pytest.fixture
def client(settings: Settings, store: InMemoryStore) -> Iterator[TestClient]:
    settings = replace(
        settings,
        extra_api_keys=(
            "other:other-key-0123456789abcdefghijklmnopqrstuvwxyz",
            "root:root-key-0123456789abcdefghijklmnopqrstuvwxyz",
        ),
        admins=("root",),
    )
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as c:
        yield c


def stored(store: InMemoryStore) -> int:
    return len(store.schedules.page(None)[0])


def create(client: TestClient, **overrides: Any) -> dict[str, Any]:
    response = client.post("/schedules", json=body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()["data"]


def test_create_answers_its_id_and_next_five_fire_times(client: TestClient) -> None:
    data = create(client)
    assert uuid.UUID(data["id"]).version == 7
    fire = [datetime.fromisoformat(f) for f in data["next_fire_times"]]
    assert len(fire) == 5
    assert all(b - a == timedelta(minutes=5) for a, b in zip(fire, fire[1:], strict=False))
    assert (
        data["callback_config"]["headers"] == {"X-A": "***"}
        or data["callback_config"]["headers"]["X-A"] != "secret"
    )
    assert data["state"] == "active"


def test_mca_timer_callback_form_is_accepted(client: TestClient) -> None:
    data = create(
        client,
        callback_type=None,
        callback_config=None,
        callback={"type": "http", "url": HOOK, "headers": None},
    )
    assert data["callback_type"] == "http"


def test_get_shows_zone_times_and_occurrences(client: TestClient) -> None:
    data = create(client, every=60, cron=None)
    got = client.get(f"/schedules/{data['id']}").json()["data"]
    assert len(got["next_fire_times_local"]) == 5
    assert got["next_fire_times_local"][0].endswith(("+01:00", "+02:00"))
    # Starting now: its first slot (due now) and the two after it are made.
    assert len(got["last_occurrences"]) == 3
    history = client.get("/timers", params={"schedule_id": data["id"]}).json()["data"]
    assert history["total"] == 3


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": None, "every": 0.5}, "every"),
        ({"cron": None}, "cron"),
        (
            {
                "start_at": "2030-01-02T00:00:00+00:00",
                "end_at": "2030-01-01T00:00:00+00:00",
            },
            "end_at",
        ),
        ({"colour": "red"}, "colour"),
        ({"callback_config": {"type": "http", "url": "ftp://x"}}, "callback_config"),
        ({"catchup": "sometimes"}, "catchup"),
    ],
)
def test_bad_input_is_400_code_2_naming_the_field_and_nothing_is_stored(
    client: TestClient, store: InMemoryStore, overrides: dict[str, Any], field: str
) -> None:
    response = client.post("/schedules", json=body(**overrides))
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == 2
    assert field in answer["message"]
    assert stored(store) == 0


def test_list_pages_with_a_cursor_and_filters_by_name(client: TestClient) -> None:
    for n in range(3):
        create(client, name=f"s{n}")
    first = client.get("/schedules", params={"limit": 2}).json()["data"]
    assert len(first["schedules"]) == 2
    rest = client.get("/schedules", params={"limit": 2, "cursor": first["next_cursor"]})
    assert [s["name"] for s in rest.json()["data"]["schedules"]] == ["s2"]
    named = client.get("/schedules", params={"name": "s1"}).json()["data"]["schedules"]
    assert [s["name"] for s in named] == ["s1"]
    taken = client.post("/schedules", json=body(name="s1"))
    assert taken.status_code == 400 and "name" in taken.json()["message"]


def test_put_pause_resume_trigger_delete(client: TestClient) -> None:
    sid = create(client)["id"]
    changed = client.put(f"/schedules/{sid}", json={"every": 30})
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert data["every"] == 30 and data["cron"] is None
    assert data["timezone"] == "Europe/Paris"
    bad = client.put(f"/schedules/{sid}", json={"timezone": "Nowhere/Land"})
    assert bad.status_code == 400 and bad.json()["code"] == 2
    paused = client.post(f"/schedules/{sid}/pause").json()["data"]
    assert paused["state"] == "paused" and paused["next_fire_times"] == []
    pending = client.get("/timers", params={"schedule_id": sid, "status": "pending"})
    assert pending.json()["data"]["total"] == 0
    assert client.post(f"/schedules/{sid}/resume").json()["data"]["state"] == "active"
    triggered = client.post(f"/schedules/{sid}/trigger")
    assert triggered.status_code == 201
    assert triggered.json()["data"]["schedule_id"] == sid
    deleted = client.delete(f"/schedules/{sid}").json()["data"]
    assert deleted["canceled"] == 3
    assert client.get(f"/schedules/{sid}").status_code == 404


def test_a_schedule_is_its_principals_alone(client: TestClient) -> None:
    sid = create(client)["id"]
    other = {"X-API-Key": "other-key-0123456789abcdefghijklmnopqrstuvwxyz"}
    for method, path in [
        ("get", f"/schedules/{sid}"),
        ("delete", f"/schedules/{sid}"),
        ("post", f"/schedules/{sid}/pause"),
        ("post", f"/schedules/{sid}/trigger"),
    ]:
        response = client.request(method, path, headers=other)
        assert response.status_code == 404 and response.json()["code"] == 3
    assert client.get("/schedules", headers=other).json()["data"]["schedules"] == []
    admin = client.get(
        f"/schedules/{sid}", headers={"X-API-Key": "root-key-0123456789abcdefghijklmnopqrstuvwxyz"}
    )
    assert admin.status_code == 200


def test_a_malformed_id_is_400_and_no_key_is_401(client: TestClient) -> None:
    assert client.get("/schedules/not-a-uuid").status_code == 400
    assert client.get("/schedules", headers={"X-API-Key": ""}).status_code == 401


def test_timers_python_api_makes_gets_and_deletes_a_schedule(store: InMemoryStore) -> None:
    from timers.library import Timers
    from timers.schedules.slots import InvalidSchedule

    hook = {"type": "http", "url": HOOK, "headers": {}, "payload": {}}
    lib = Timers(store=store, settings=Settings(database_url="postgresql://unused/x"))
    made = lib.create_schedule("http", hook, every=60, name="py")
    assert lib.get_schedule(str(made.id)).spec.name == "py"
    with pytest.raises(InvalidSchedule) as bad:
        lib.create_schedule("http", hook, cron="not a cron")
    assert bad.value.field == "cron"
    assert lib.delete_schedule(made.id) == 3  # its first slot (now) and the two after it
