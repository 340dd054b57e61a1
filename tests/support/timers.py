"""Making timers in a test's database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from timers.models import Timer
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
