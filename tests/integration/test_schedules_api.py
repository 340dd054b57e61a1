"""One tour of the /schedules routes through HTTP on PostgreSQL: made, read, listed, changed,
paused, resumed, triggered and deleted, with its occurrences in `timers`. The routes in detail
run on the in-memory store (tests/unit/test_schedules_api.py); the store's schedules are held to
the same contract on both (tests/contract/test_schedule_store.py)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings
from timers.store import TimerStore

BODY = {
    "every": 60,
    "timezone": "Europe/Paris",
    "name": "tour",
    "callback_type": "http",
    "callback_config": {"type": "http", "url": "https://receiver.example/hook"},
}


def test_a_schedule_through_every_route(settings: Settings, store: TimerStore) -> None:
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as client:
        created = client.post("/schedules", json=BODY)
        assert created.status_code == 201, created.text
        sid = created.json()["data"]["id"]
        got = client.get(f"/schedules/{sid}").json()["data"]
        # Starting now: its first slot (due now) and the two after it are made.
        assert len(got["last_occurrences"]) == 3 and len(got["next_fire_times_local"]) == 5
        listed = client.get("/schedules", params={"name": "tour"}).json()["data"]["schedules"]
        assert [s["id"] for s in listed] == [sid]
        assert client.post("/schedules", json=BODY).status_code == 400  # the name is taken
        changed = client.put(f"/schedules/{sid}", json={"every": 30}).json()["data"]
        assert changed["every"] == 30 and changed["timezone"] == "Europe/Paris"
        assert client.post(f"/schedules/{sid}/pause").json()["data"]["state"] == "paused"
        pending = client.get("/timers", params={"schedule_id": sid, "status": "pending"})
        assert pending.json()["data"]["total"] == 0
        assert client.post(f"/schedules/{sid}/resume").json()["data"]["state"] == "active"
        triggered = client.post(f"/schedules/{sid}/trigger")
        assert triggered.status_code == 201 and triggered.json()["data"]["schedule_id"] == sid
        assert client.delete(f"/schedules/{sid}").json()["data"]["canceled"] == 3
        assert client.get(f"/schedules/{sid}").status_code == 404
        history = client.get("/timers", params={"schedule_id": sid}).json()["data"]
        assert history["total"] >= 3  # its occurrences stay, as its history
