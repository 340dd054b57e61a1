"""The schedule routes on an app built over the in-memory twin, which keeps no schedules: each
answers 501 in the envelope (code 1) saying so, as its OpenAPI documents, never a bare 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings
from timers.testing import InMemoryStore

ID = "0190a4b2-0000-7000-8000-000000000001"
BODY = {
    "every": 60,
    "callback_type": "http",
    "callback_config": {"type": "http", "url": "https://receiver.example/hook"},
}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/schedules", None),
        ("POST", "/schedules", BODY),
        ("GET", f"/schedules/{ID}", None),
        ("PUT", f"/schedules/{ID}", {"every": 30}),
        ("DELETE", f"/schedules/{ID}", None),
        ("POST", f"/schedules/{ID}/pause", None),
        ("POST", f"/schedules/{ID}/trigger", None),
    ],
)
def test_schedule_routes_say_the_store_keeps_no_schedules(
    settings: Settings, store: InMemoryStore, method: str, path: str, body: object
) -> None:
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY}) as client:
        response = client.request(method, path, json=body)
        assert response.status_code == 501, response.text
        answer = response.json()
        assert answer["code"] == 1 and "PostgreSQL" in answer["message"], answer
        documented = app.openapi()["paths"][path.replace(ID, "{schedule_id}")]
        assert "501" in documented[method.lower()]["responses"]
