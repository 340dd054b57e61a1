"""What the API tells operators: `GET /metrics` (Prometheus, like /health without a key),
`GET /stats` (the timers page's numbers, with the key), and the middleware that counts requests."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from timers.api.deps import Store
from timers.api.envelope import envelope
from timers.api.schemas import Envelope, LatenessMinute, Stats, errors
from timers.metrics import ApiMetrics, exposition

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

metrics_router = APIRouter(tags=["monitoring"])
router = APIRouter(tags=["monitoring"])


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        **errors(500),
    },
    summary="Prometheus metrics of this API process",
)
def metrics(request: Request) -> Response:
    body, content_type = exposition(request.app.state.metrics.registry)
    return Response(body, media_type=content_type)


@router.get(
    "/stats",
    response_model=Envelope[Stats],
    responses=errors(400, 401, 500),
    summary="Counts by status, the due backlog and recent lateness",
)
def stats(request: Request, store: Store) -> JSONResponse:
    """Cheap at any size: counts are estimates on tables of 100,000 rows or more, the backlog
    is counted up to 100,000, and lateness reads a bounded sample of the last 15 minutes."""
    found = store.stats()
    return envelope(
        Stats(
            counts=found.counts,
            counts_estimated=found.counts_estimated,
            due_backlog=found.due_backlog,
            lateness=[
                LatenessMinute(
                    minute=m.minute,
                    count=m.count,
                    p50_ms=round(m.p50_ms, 1),
                    p99_ms=round(m.p99_ms, 1),
                    max_ms=round(m.max_ms, 1),
                )
                for m in found.lateness
            ],
            flower_url=request.app.state.flower_url,
        )
    )


class RequestMetrics:
    """Counts every HTTP request by its route's template (`/timers/{timer_id}`, never the path
    itself, so ids don't multiply the series), method and status code."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.monotonic()
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            # Any token is a method to HTTP/1.1: only the known ones get a series of their own.
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.observe(route, method, status, time.monotonic() - began)
