"""The plan PostgreSQL chooses for a statement a store method sends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from timers.store import TimerStore


def explained(store: TimerStore, call: Callable[[], Any], start: str) -> str:
    """EXPLAIN (without running it again) of the last statement starting with `start` that
    `call()` sent (a `SELECT count(*)` of a page's total aside)."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        head = " ".join(statement.split()).upper()
        if head.startswith(start) and not head.startswith("SELECT COUNT("):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    statement, parameters = seen[-1]
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN " + statement, parameters)
        return "\n".join(row[0] for row in cursor.fetchall())
    finally:
        raw.close()
