"""The REST API. `create_app(settings)` builds it; `timers.api:app` builds one from the environment
when uvicorn asks for it (never at import time)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI

from timers import __version__
from timers.api import health, routes
from timers.api.body_limit import BodyLimit
from timers.api.deps import require_api_key
from timers.api.envelope import install_handlers
from timers.config import ConfigError, Settings, load_settings
from timers.storage import StoreError
from timers.store import TimerStore, database_engine

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_BATCH_BODY_BYTES = 8 * 1024 * 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    *,
    store: TimerStore | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> FastAPI:
    """The API app. It owns the store's engine (and disposes it at shutdown) unless one is given."""
    if not settings.api_key:
        raise ConfigError(
            "API_KEY is not set: every route but /health needs an X-API-Key to compare"
        )
    owned = store is None
    timer_store = store or TimerStore(database_engine(settings.require_database_url()))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            timer_store.ping()
        except StoreError as exc:
            raise SystemExit(f"timers api: cannot reach PostgreSQL: {exc}") from None
        yield
        if owned:
            timer_store.engine.dispose()

    app = FastAPI(
        title="timers",
        version=__version__,
        description="Durable one-shot timers: at `execute_at`, POST this JSON to this URL, once.",
        lifespan=lifespan,
    )
    app.state.store = timer_store
    app.state.clock = clock
    app.state.api_key = settings.api_key
    install_handlers(app)
    app.include_router(health.router)
    app.include_router(routes.router, dependencies=[Depends(require_api_key)])
    app.add_middleware(
        BodyLimit, max_bytes=MAX_BODY_BYTES, per_path={"/timers/batch": MAX_BATCH_BODY_BYTES}
    )
    return app


def __getattr__(name: str) -> Any:
    # `uvicorn timers.api:app` looks this attribute up once, at start.
    if name == "app":
        return create_app(load_settings())
    raise AttributeError(name)
