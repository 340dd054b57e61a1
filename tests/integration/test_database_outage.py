"""The API while its database refuses connections: 500s in the envelope, then back to normal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from tests.support.databases import admin_execute
from tests.support.services import API_KEY, Services
from timers.api import create_app
from timers.config import Settings
from timers.store import TimerStore


def set_database_reachable(services: Services, database_url: str, reachable: bool) -> None:
    """Make PostgreSQL refuse (or accept again) every connection to this database.

    A real outage for the app: its pooled connections are killed and new ones are refused.
    """
    name = make_url(database_url).database
    admin_execute(services, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(reachable).lower()}')
    if not reachable:
        admin_execute(
            services,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )


def a_timer() -> dict[str, Any]:
    """A create body for a timer an hour ahead."""
    return {
        "execute_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "callback_type": "http",
        "callback_config": {"url": "http://127.0.0.1:9/hook"},
    }


def api_client(app: FastAPI) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": API_KEY})


def test_database_down_gives_degraded_health_and_500s_then_recovers(
    services: Services, settings: Settings, store: TimerStore, database_url: str
) -> None:
    app = create_app(settings, store=store)
    body = a_timer()
    with api_client(app) as client:
        assert client.post("/timers", json=body).status_code == 201
        set_database_reachable(services, database_url, False)
        try:
            health = client.get("/health")
            assert health.status_code == 500
            assert health.json()["data"]["status"] == "degraded"
            for response in (client.get("/timers"), client.post("/timers", json=body)):
                assert response.status_code == 500
                assert response.json()["code"] == 1
                assert "Traceback" not in response.text
                assert "psycopg2" not in response.text
        finally:
            set_database_reachable(services, database_url, True)
        assert client.get("/health").json()["data"]["status"] == "up"
        listing = client.get("/timers", params={"total": "true"})
        assert listing.status_code == 200
        assert listing.json()["data"]["total"] == 1


def test_the_python_api_replaces_a_connection_the_database_dropped(
    services: Services, database_url: str, settings: Settings
) -> None:
    from timers.library import Timers

    timers = Timers(settings=settings)  # no ping per checkout
    try:
        first = timers.schedule("shop.tasks.expire_order", countdown=60)
        # The database restarts (here: kills every connection): the pooled one is dead.
        set_database_reachable(services, database_url, False)
        set_database_reachable(services, database_url, True)
        second = timers.schedule("shop.tasks.expire_order", countdown=60)
        assert timers.get(second.id).status.value == "pending"
        assert len(timers.list()) == 2 and first.id != second.id
    finally:
        timers.close()


def test_the_api_replaces_a_pooled_connection_the_database_dropped_while_idle(
    services: Services, settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every connection counts as idle: the ping at checkout, not a retry, must save the read.
    monkeypatch.setattr("timers.api.PING_AFTER_IDLE", 0.0)
    app = create_app(settings)  # its own engine, as `timers api` makes it
    body = a_timer()
    with api_client(app) as client:
        assert client.post("/timers", json=body).status_code == 201
        # The database restarts (here: kills every connection): the pooled one is dead.
        set_database_reachable(services, database_url, False)
        set_database_reachable(services, database_url, True)
        listing = client.get("/timers")
        assert listing.status_code == 200
        assert len(listing.json()["data"]["timers"]) == 1
