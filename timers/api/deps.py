"""Dependencies shared by the routes: the store, the clock and the API key check."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from timers.api.envelope import ApiError, Code
from timers.callbacks import CallbackRules
from timers.storage import Store as TimerStore

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def get_store(request: Request) -> TimerStore:
    store: TimerStore = request.app.state.store
    return store


def get_clock(request: Request) -> Callable[[], datetime]:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock


def reject_unknown_query(request: Request) -> None:
    """A query parameter the route does not take is a mistake worth a 400, not silence."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        known |= {p.alias for p in sub.query_params}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise ApiError(Code.VALIDATION, f"{unknown[0]}: unknown query parameter")


def get_rules(request: Request) -> CallbackRules:
    rules: CallbackRules = request.app.state.rules
    return rules


def get_max_delay(request: Request) -> timedelta:
    max_delay: timedelta = request.app.state.max_delay
    return max_delay


def require_api_key(request: Request, key: Annotated[str | None, Depends(_api_key_header)]) -> None:
    """Any of the configured keys is accepted (several at once, so keys rotate without a gap);
    every one is compared in constant time."""
    keys: tuple[str, ...] = request.app.state.api_keys
    if key is None:
        raise ApiError(Code.UNAUTHORIZED, "missing X-API-Key header")
    matches = [secrets.compare_digest(key.encode(), expected.encode()) for expected in keys]
    if not any(matches):
        raise ApiError(Code.UNAUTHORIZED, "invalid API key")


def presented_api_key(request: Request) -> str:
    """The X-API-Key this request came with (checked by `require_api_key` already). Read from the
    request, not through the security scheme, so that the document names the scheme once."""
    return request.headers.get("X-API-Key", "")


Store = Annotated[TimerStore, Depends(get_store)]
ApiKey = Annotated[str, Depends(presented_api_key)]
Clock = Annotated[Callable[[], datetime], Depends(get_clock)]
Rules = Annotated[CallbackRules, Depends(get_rules)]
MaxDelay = Annotated[timedelta, Depends(get_max_delay)]
