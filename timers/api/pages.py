"""Pages of `GET /timers`: their cursors (where the next page starts, as an opaque token) and
their bound in bytes."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from timers.api.envelope import ApiError, Code
from timers.api.schemas import TimerOut
from timers.storage import PagePosition, TimerPage

# A page stops at the timer that brings its timers' JSON to this size: 200 timers of 64 KiB
# would make a 13 MB answer.
MAX_PAGE_BYTES = 4 * 1024 * 1024


def bounded(page: TimerPage, sort: str) -> tuple[list[TimerOut], PagePosition | None]:
    """The timers of `page` as the API lists them, up to the one whose JSON brings the list to
    MAX_PAGE_BYTES (that one included: a page always holds one and can go on), and where the next
    page starts: right after the last one listed when the list was cut short, else `page.next`."""
    listed: list[TimerOut] = []
    size = 0
    for timer in page.timers:
        listed.append(TimerOut.of(timer))
        size += len(listed[-1].model_dump_json(by_alias=True).encode())
        if size >= MAX_PAGE_BYTES and len(listed) < len(page.timers):
            return listed, (getattr(timer, sort), timer.id)
    return listed, page.next


def encode(position: PagePosition, sort: str, order: str) -> str:
    """The sort and order travel with the position, so a cursor is never read in another order."""
    value, timer_id = position
    raw = json.dumps([sort, order, value.isoformat(), str(timer_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str, sort: str, order: str) -> PagePosition:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for_sort, made_for_order, value, timer_id = json.loads(raw)
        position = (datetime.fromisoformat(value), uuid.UUID(timer_id))
    except (ValueError, TypeError, AttributeError):
        raise ApiError(
            Code.VALIDATION, "cursor: not a cursor this API gave (pass next_cursor as it is)"
        ) from None
    if position[0].tzinfo is None:
        raise ApiError(Code.VALIDATION, "cursor: not a cursor this API gave")
    if (made_for_sort, made_for_order) != (sort, order):
        raise ApiError(
            Code.VALIDATION,
            f"cursor: it continues a list in sort={made_for_sort} order={made_for_order}; "
            "ask with the same sort and order",
        )
    return position
