"""Making timers in a test's database."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text

from timers.models import Timer, uuid7
from timers.store import NewTimer, TimerStore


def now() -> datetime:
    return datetime.now(UTC)


def add_timer(
    store: TimerStore, at: datetime, url: str = "http://127.0.0.1:9/hook", **payload: Any
) -> Timer:
    """A pending HTTP timer due at `at`, to `url` (by default a port where nothing listens)."""
    return store.create(
        NewTimer(
            execute_at=at,
            callback_type="http",
            callback_config={"type": "http", "url": url, "payload": payload},
        )
    )


def write_directly(
    engine: Engine, callback_type: str, configs: list[dict[str, Any]]
) -> list[uuid.UUID]:
    """Pending timers due now, written straight into the table with SQL: no check of the API or
    the Python API on the way, as a direct writer (or an older version) could have stored them."""
    rows = [{"id": uuid7(), "type": callback_type, "config": json.dumps(c)} for c in configs]
    statement = text(
        "INSERT INTO timers (id, execute_at, callback_type, callback_config, status) "
        "VALUES (:id, now(), :type, CAST(:config AS jsonb), 'pending')"
    )
    with engine.begin() as conn:
        conn.execute(statement, rows)
    return [uuid.UUID(str(row["id"])) for row in rows]
