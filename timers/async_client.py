"""The REST client for asyncio callers (a FastAPI app, an async Django view): the methods of
`timers.client.Client`, awaited, on aiohttp. Requests are built and answers read by the same
functions as `Client`'s, so both raise the same exceptions (`timers.errors`) for the same answers.

    from timers.async_client import AsyncClient

    async with AsyncClient("https://timers.internal", api_key=os.environ["TIMERS_API_KEY"]) as timers:
        timer = await timers.schedule("shop.tasks.expire_order", args=[42], countdown=3600)
        await timers.cancel(timer.id)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import aiohttp

from timers.client import list_params, reschedule_body, schedule_body, timer_from, unwrap
from timers.errors import TimersUnavailable
from timers.models import Timer, TimerStatus


class AsyncClient:
    def __init__(self, url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.api_key = api_key
        self._session: aiohttp.ClientSession | None = None  # made in the caller's event loop

    async def schedule(
        self,
        target: Any,
        *,
        eta: datetime | None = None,
        countdown: float | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Timer:
        """As `Client.schedule`."""
        body = schedule_body(
            target, eta, countdown, args, kwargs, queue, priority, headers, metadata
        )
        created = await self._call("POST", "/timers", json=body)
        return await self.get(created["id"])

    async def get(self, timer_id: uuid.UUID | str) -> Timer:
        return timer_from(await self._call("GET", f"/timers/{timer_id}"))

    async def cancel(self, timer_id: uuid.UUID | str) -> Timer:
        await self._call("DELETE", f"/timers/{timer_id}")
        return await self.get(timer_id)

    async def reschedule(
        self,
        timer_id: uuid.UUID | str,
        *,
        eta: datetime | None = None,
        countdown: float | None = None,
    ) -> Timer:
        body = reschedule_body(eta, countdown)
        return timer_from(await self._call("PUT", f"/timers/{timer_id}", json=body))

    async def list(
        self,
        *,
        status: TimerStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
        sort: str = "created_at",
        order: str = "desc",
    ) -> list[Timer]:
        params = list_params(status, limit, offset, sort, order)
        page = await self._call("GET", "/timers", params=params)
        return [timer_from(t) for t in page["timers"]]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"X-API-Key": self.api_key}, timeout=self.timeout
            )
        try:
            async with self._session.request(method, self.url + path, **kwargs) as response:
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TimersUnavailable(f"{method} {path}: {str(exc) or type(exc).__name__}") from None
        return unwrap(method, path, status, answer)
