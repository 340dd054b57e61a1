"""Dependencies shared by the routes: the store, the clock and the API key check, which tells the
principal a request acts for.

They are `async def` although none of them waits: FastAPI runs a plain `def` dependency on its
thread pool, a hand-off to another thread and back for each, seven of them per create."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from timers.api.envelope import ApiError, Code
from timers.callbacks import CallbackRules
from timers.storage import Store as TimerStore

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def get_store(request: Request) -> TimerStore:
    store: TimerStore = request.app.state.store
    return store


async def get_clock(request: Request) -> Callable[[], datetime]:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock


async def reject_unknown_query(request: Request) -> None:
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


async def get_rules(request: Request) -> CallbackRules:
    rules: CallbackRules = request.app.state.rules
    return rules


async def get_max_pending(request: Request) -> int | None:
    max_pending: int | None = request.app.state.max_pending
    return max_pending


async def get_max_delay(request: Request) -> timedelta:
    max_delay: timedelta = request.app.state.max_delay
    return max_delay


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the name its API key belongs to. An admin sees every principal's
    timers; any other principal its own alone."""

    name: str
    admin: bool = False

    @property
    def scope(self) -> str | None:
        """The owner whose timers this principal reads and changes (None: every owner's)."""
        return None if self.admin else self.name


async def require_api_key(
    request: Request, key: Annotated[str | None, Depends(_api_key_header)]
) -> Principal:
    """Any of the configured keys is accepted (several at once, so keys rotate without a gap);
    every one is compared in constant time. Answers the principal the key belongs to."""
    principals: dict[str, str] = request.app.state.principals
    if key is None:
        raise ApiError(Code.UNAUTHORIZED, "missing X-API-Key header")
    found = None
    for expected, name in principals.items():
        if secrets.compare_digest(key.encode(), expected.encode()):
            found = name
    if found is None:
        raise ApiError(Code.UNAUTHORIZED, "invalid API key")
    return Principal(found, admin=found in request.app.state.admins)


async def presented_api_key(request: Request) -> str:
    """The X-API-Key this request came with (checked by `require_api_key` already). Read from the
    request, not through the security scheme, so that the document names the scheme once."""
    return request.headers.get("X-API-Key", "")


Store = Annotated[TimerStore, Depends(get_store)]
ApiKey = Annotated[str, Depends(presented_api_key)]
Clock = Annotated[Callable[[], datetime], Depends(get_clock)]
Rules = Annotated[CallbackRules, Depends(get_rules)]
MaxDelay = Annotated[timedelta, Depends(get_max_delay)]
Caller = Annotated[Principal, Depends(require_api_key)]
MaxPending = Annotated[int | None, Depends(get_max_pending)]
