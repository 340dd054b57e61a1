"""Page cursors of `GET /timers`: where the next page starts, as an opaque token."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from timers.api.envelope import ApiError, Code
from timers.storage import PagePosition


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
