"""The statements a store method sends, and the plan PostgreSQL chooses for one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from timers.store import TimerStore


@contextmanager
def statements_sent(store: TimerStore) -> Iterator[list[tuple[str, Any]]]:
    """The (statement, parameters) the store's engine sends inside the `with`, in order."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)


def explained(store: TimerStore, call: Callable[[], Any], start: str) -> str:
    """EXPLAIN (without running it again) of the last statement starting with `start` that
    `call()` sent (a `SELECT count(*)` of a page's total aside)."""
    with statements_sent(store) as sent:
        call()
    statement, parameters = [
        (statement, parameters)
        for statement, parameters in sent
        if (head := " ".join(statement.split()).upper()).startswith(start)
        and not head.startswith("SELECT COUNT(")
    ][-1]
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN " + statement, parameters)
        return "\n".join(row[0] for row in cursor.fetchall())
    finally:
        raw.close()
