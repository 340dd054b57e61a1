"""The REST API. `create_app(settings)` builds it; `timers.api:app` builds one from the environment
when uvicorn asks for it (never at import time)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from timers import __version__
from timers.api import changes, health, monitoring, routes, schedules, ui
from timers.api.body_limit import BodyLimit
from timers.api.deps import reject_unknown_query, require_api_key
from timers.api.envelope import install_handlers
from timers.callbacks import CallbackRules
from timers.config import Settings, load_settings
from timers.logs import configure_logging
from timers.metrics import ApiMetrics
from timers.models import utc_now
from timers.storage import Store, StoreError
from timers.store import TimerStore, database_engine

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_BATCH_BODY_BYTES = 8 * 1024 * 1024
# No request may hold a database connection longer: a count of many rows or a deep offset is cut
# off (an error naming the statement timeout) instead of taking every connection of the pool.
STATEMENT_TIMEOUT = 5.0
# Connections kept open per API process: as many as requests that run at once on the thread pool
# in the common case, so that a busy API does not open and close a PostgreSQL connection (a new
# backend process) per request; beyond them, up to POOL_OVERFLOW more for a burst.
POOL_SIZE = 20
POOL_OVERFLOW = 20
# A pooled connection unused this long is pinged before a request uses it; a busy API skips the
# round trip (store.database_engine).
PING_AFTER_IDLE = 1.0


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> FastAPI:
    """The API app, on `store` (any `Store`: PostgreSQL's, or the in-memory twin in tests), else
    on a PostgreSQL store it makes, whose engine has a `STATEMENT_TIMEOUT` and is disposed of at
    shutdown."""
    settings.require_api_keys()
    owned: TimerStore | None = None
    if store is None:
        owned = store = TimerStore(
            database_engine(
                settings.require_database_url(),
                statement_timeout=STATEMENT_TIMEOUT,
                ping_after_idle=PING_AFTER_IDLE,
                pool_size=POOL_SIZE,
                max_overflow=POOL_OVERFLOW,
            )
        )
    timer_store: Store = store

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            timer_store.ping()
        except StoreError as exc:
            raise SystemExit(f"timers api: cannot reach PostgreSQL: {exc}") from None
        yield
        if owned is not None:
            owned.engine.dispose()

    app = FastAPI(
        title="timers",
        version=__version__,
        description="Durable one-shot timers: at `execute_at`, POST this JSON to this URL, once.",
        lifespan=lifespan,
    )
    app.state.store = timer_store
    app.state.clock = clock
    app.state.principals = settings.principals
    app.state.admins = frozenset(settings.admins)
    app.state.max_pending = settings.max_pending_per_key
    app.state.rules = CallbackRules.from_settings(settings, outbound=True)
    app.state.max_delay = timedelta(seconds=settings.max_delay)
    app.state.flower_url = settings.flower_url
    app.state.metrics = ApiMetrics()
    install_handlers(app)
    app.include_router(health.router, dependencies=[Depends(reject_unknown_query)])
    app.include_router(monitoring.metrics_router, dependencies=[Depends(reject_unknown_query)])
    app.include_router(ui.router, include_in_schema=False)
    app.include_router(
        routes.router, dependencies=[Depends(require_api_key), Depends(reject_unknown_query)]
    )
    app.include_router(
        changes.router, dependencies=[Depends(require_api_key), Depends(reject_unknown_query)]
    )
    app.include_router(
        schedules.router, dependencies=[Depends(require_api_key), Depends(reject_unknown_query)]
    )
    app.include_router(
        monitoring.router, dependencies=[Depends(require_api_key), Depends(reject_unknown_query)]
    )
    app.add_middleware(
        BodyLimit, max_bytes=MAX_BODY_BYTES, per_path={"/timers/batch": MAX_BATCH_BODY_BYTES}
    )
    app.add_middleware(monitoring.RequestMetrics, metrics=app.state.metrics)
    app.openapi = lambda: contract(app)  # type: ignore[method-assign]
    return app


def contract(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, as the API behaves: FastAPI's own 422 answer is never given (bad
    input is a 400 in the envelope), so it is not documented."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


def worker_app() -> FastAPI:
    """The app of one of several API processes (`timers api --workers N`): each process
    configures its logging and builds its app from the environment."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def __getattr__(name: str) -> Any:
    # `uvicorn timers.api:app` looks this attribute up once, at start.
    if name == "app":
        return create_app(load_settings())
    raise AttributeError(name)
