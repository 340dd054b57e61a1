"""`timers.async_client.AsyncClient` against the real API (the `timers api` command on a fresh
database): every method of `Client`, awaited, with the same answers and the same exceptions for
the same errors. Real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.services import API_KEY, TASK_BROKER_DATABASE, Services
from timers.async_client import AsyncClient
from timers.client import Client
from timers.embedded import free_port
from timers.errors import (
    InvalidTimer,
    TimerNotFound,
    TimerNotPending,
    TimersUnavailable,
    Unauthorized,
)
from timers.models import TimerStatus

MISSING = "01890000-0000-7000-8000-000000000000"


@pytest.fixture(scope="module")
def api_url(services: Services, template_database: str) -> Iterator[str]:
    name = create_database(services, template_database)
    env = {
        "DATABASE_URL": services.database_url(name),
        "REDIS_URL": services.redis_url,
        "API_KEY": API_KEY,
        "TIMERS_TASK_BROKER_URL": services.redis_database(TASK_BROKER_DATABASE),
        "TIMERS_CELERY_TASKS": "shop.tasks.*",
        "TIMERS_CELERY_QUEUES": "shop,celery",
    }
    port = free_port()
    command = [str(processes.BIN / "timers"), "api", "--host", "127.0.0.1", "--port", str(port)]
    proc = processes.Process("api", command, env)
    try:
        assert proc.wait_for_output("Application startup complete", 30), proc.output()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
        drop_database(services, name)


def run(work: Callable[[AsyncClient], Awaitable[Any]], url: str, key: str = API_KEY) -> Any:
    async def main() -> Any:
        async with AsyncClient(url, key) as client:
            return await work(client)

    return asyncio.run(main())


def test_every_method_of_client_awaited(api_url: str) -> None:
    later = datetime.now(UTC) + timedelta(hours=2)

    async def work(client: AsyncClient) -> None:
        timer = await client.schedule(
            "shop.tasks.expire_order", args=[42], queue="shop", countdown=3600,
            metadata={"order": 42},
        )  # fmt: skip
        assert timer.status is TimerStatus.PENDING
        assert timer.callback_config["args"] == [42] and timer.metadata == {"order": 42}
        assert await client.get(timer.id) == timer
        moved = await client.reschedule(timer.id, eta=later)
        assert moved.execute_at == later
        assert [t.id for t in await client.list(status="pending")] == [timer.id]
        canceled = await client.cancel(str(timer.id))
        assert canceled.status is TimerStatus.CANCELED
        assert [t.id for t in await client.list(status=TimerStatus.CANCELED)] == [timer.id]
        with pytest.raises(TimerNotPending):
            await client.cancel(timer.id)

    run(work, api_url)


def test_it_answers_as_the_sync_client_does(api_url: str) -> None:
    with Client(api_url, API_KEY) as sync:
        made = sync.schedule("shop.tasks.expire_order", args=[7], countdown=600)
        assert run(lambda client: client.get(made.id), api_url) == sync.get(made.id)
        assert run(lambda client: client.list(limit=200), api_url) == sync.list(limit=200)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.get(MISSING), TimerNotFound),
        (lambda c: c.cancel(MISSING), TimerNotFound),
        (lambda c: c.schedule("not a task!", countdown=5), InvalidTimer),
        (lambda c: c.schedule("billing.charge", countdown=5), InvalidTimer),  # not allowed
        (lambda c: c.reschedule(MISSING), InvalidTimer),  # neither eta nor countdown
    ],
)
def test_errors_are_the_sync_clients_exceptions(
    api_url: str, call: Callable[[Any], Awaitable[Any]], error: type[Exception]
) -> None:
    with pytest.raises(error):
        run(call, api_url)
    with Client(api_url, API_KEY) as sync, pytest.raises(error):
        call(sync)


def test_a_wrong_key_is_unauthorized_and_no_server_is_unavailable(api_url: str) -> None:
    with pytest.raises(Unauthorized):
        run(lambda client: client.list(), api_url, key="x" * 40)
    with pytest.raises(TimersUnavailable):
        run(lambda client: client.list(), f"http://127.0.0.1:{free_port()}")
