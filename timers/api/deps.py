"""Dependencies shared by the routes: the store, the clock and the API key check."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from timers.api.envelope import ApiError, Code
from timers.storage import Store as TimerStore

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def get_store(request: Request) -> TimerStore:
    store: TimerStore = request.app.state.store
    return store


def get_clock(request: Request) -> Callable[[], datetime]:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock


def require_api_key(request: Request, key: Annotated[str | None, Depends(_api_key_header)]) -> None:
    expected: str = request.app.state.api_key
    if key is None:
        raise ApiError(Code.UNAUTHORIZED, "missing X-API-Key header")
    if not secrets.compare_digest(key.encode(), expected.encode()):
        raise ApiError(Code.UNAUTHORIZED, "invalid API key")


Store = Annotated[TimerStore, Depends(get_store)]
Clock = Annotated[Callable[[], datetime], Depends(get_clock)]
