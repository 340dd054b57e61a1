"""`GET /health` (and mca-timer's `GET /healthz`): is the API up and can it reach the database?"""

from __future__ import annotations

import logging
from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from timers import __version__
from timers.api.deps import Clock, Store
from timers.api.envelope import Code, envelope
from timers.api.schemas import Envelope, ErrorEnvelope, Health, Healthz
from timers.storage import StoreError

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Envelope[Health],
    responses={500: {"model": ErrorEnvelope, "description": "database unreachable (code 1)"}},
    summary="Liveness and database reachability",
)
def health(store: Store) -> JSONResponse:
    try:
        store.ping()
    except StoreError as exc:
        log.warning("health check: database unreachable: %s", exc)
        data = {"status": "degraded", "database": "unreachable", "version": __version__}
        return envelope(data, code=Code.INTERNAL, message="database unreachable")
    return envelope({"status": "up", "database": "connected", "version": __version__})


@router.get(
    "/healthz",
    response_model=Envelope[Healthz],
    responses={500: {"model": ErrorEnvelope, "description": "database unreachable (code 1)"}},
    summary="Liveness and database reachability, as mca-timer answers it",
)
def healthz(store: Store, clock: Clock) -> JSONResponse:
    """mca-timer's health check: `status` `up`, `database` `connected` and the server's time;
    500 with `degraded` and `disconnected` when the database can't be reached."""
    timestamp: datetime = clock()
    try:
        store.ping()
    except StoreError as exc:
        log.warning("health check: database unreachable: %s", exc)
        data = {"status": "degraded", "database": "disconnected", "timestamp": timestamp}
        return envelope(data, code=Code.INTERNAL, message="database connection failed")
    return envelope({"status": "up", "database": "connected", "timestamp": timestamp})
