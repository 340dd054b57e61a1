"""`celery` callbacks due together, published in batches to a real Redis broker: every task once,
as Celery's own `send_task` would have written it."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
import redis
from kombu import Connection

from tests.support.services import TASK_BROKER_DATABASE, Services
from timers.callbacks.celery import CeleryCallback
from timers.callbacks.task_publisher import Publisher

QUEUE = "shop"


@pytest.fixture
def broker_url(services: Services) -> str:
    url = services.redis_database(TASK_BROKER_DATABASE)
    redis.Redis.from_url(url).flushdb()
    return url


def publish_all(
    publisher: Publisher, calls: list[tuple[CeleryCallback, uuid.UUID]]
) -> list[str | None]:
    async def run() -> list[str | None]:
        return list(await asyncio.gather(*(publisher.publish(c, i) for c, i in calls)))

    return asyncio.run(run())


def queued(url: str, queue: str) -> list[dict[str, Any]]:
    """The messages waiting in `queue`, decoded by kombu as a worker would (oldest first)."""
    found = []
    with Connection(url) as conn:
        simple = conn.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                try:
                    message = simple.get(timeout=0.5)
                except simple.Empty:
                    break
                found.append(
                    {"headers": message.headers, "body": message.decode(), **message.properties}
                )
        finally:
            simple.close()
    return found


def test_tasks_due_together_are_each_published_once_as_send_task_would(broker_url: str) -> None:
    publisher = Publisher(broker_url, timeout=5)
    calls = [
        (CeleryCallback("shop.tasks.expire_order", [n], {"reason": "unpaid"}, QUEUE), uuid.uuid4())
        for n in range(1200)  # more than one batch
    ]
    try:
        reasons = publish_all(publisher, calls)
        # The same call through Celery's send_task, for comparison.
        publisher.app.send_task(
            "shop.tasks.expire_order",
            args=[0],
            kwargs={"reason": "unpaid"},
            queue=QUEUE,
            task_id="x",
        )
    finally:
        publisher.close()
    assert reasons == [None] * len(calls)
    messages = queued(broker_url, QUEUE)
    reference = messages.pop()
    assert reference["headers"]["id"] == "x"
    assert sorted(m["headers"]["id"] for m in messages) == sorted(str(i) for _, i in calls)
    by_id = {m["headers"]["id"]: m for m in messages}
    for callback, timer_id in calls[:3]:
        message = by_id[str(timer_id)]
        assert message["body"] == [callback.args, callback.kwargs, reference["body"][2]]
        assert set(message["headers"]) == set(reference["headers"])
        assert message["headers"]["task"] == "shop.tasks.expire_order"
        assert message["headers"]["root_id"] == str(timer_id)
        assert message["correlation_id"] == str(timer_id)
    first = by_id[str(calls[0][1])]["headers"]  # the same arguments as the reference
    for header in ("argsrepr", "kwargsrepr", "origin", "lang", "timelimit", "retries"):
        assert first[header] == reference["headers"][header], header


def test_long_arguments_are_shown_shortened_as_celery_shows_them(broker_url: str) -> None:
    publisher = Publisher(broker_url, timeout=5)
    args = [{"order": [1, [2, [3, [4, [5]]]]]}, "x" * 3000]
    kwargs = {"note": "y" * 2000, "deep": {"a": {"b": {"c": {"d": 1}}}}}
    call = CeleryCallback("shop.tasks.expire_order", args, kwargs, QUEUE)
    try:
        assert publish_all(publisher, [(call, uuid.uuid4())]) == [None]
        publisher.app.send_task(
            "shop.tasks.expire_order", args=args, kwargs=kwargs, queue=QUEUE, task_id="x"
        )
    finally:
        publisher.close()
    ours, reference = (m["headers"] for m in queued(broker_url, QUEUE))
    assert len(ours["argsrepr"]) < 1100 and len(ours["kwargsrepr"]) < 1100
    assert (ours["argsrepr"], ours["kwargsrepr"]) == (
        reference["argsrepr"],
        reference["kwargsrepr"],
    )


def test_a_timers_headers_go_where_send_task_puts_them(broker_url: str) -> None:
    publisher = Publisher(broker_url, timeout=5)
    timer_id = uuid.uuid4()
    call = CeleryCallback("shop.tasks.expire_order", [1], {}, QUEUE, None, {"tenant": "acme"})
    try:
        assert publish_all(publisher, [(call, timer_id)]) == [None]
    finally:
        publisher.close()
    (message,) = queued(broker_url, QUEUE)
    assert message["headers"]["tenant"] == "acme"
    assert message["headers"]["id"] == str(timer_id)


def test_a_publisher_without_a_broker_says_why_for_each_task() -> None:
    publisher = Publisher("redis://127.0.0.1:1/0", timeout=1)
    calls = [(CeleryCallback("shop.tasks.expire_order", [n]), uuid.uuid4()) for n in range(5)]
    try:
        reasons = publish_all(publisher, calls)
    finally:
        publisher.close()
    assert all(reason and "refused" in reason.lower() for reason in reasons), reasons


def test_a_task_whose_delivery_stopped_waiting_before_its_turn_is_never_sent(
    broker_url: str,
) -> None:
    publisher = Publisher(broker_url, timeout=5)
    first, late = uuid.uuid4(), uuid.uuid4()
    call = CeleryCallback("shop.tasks.expire_order", [1], {}, QUEUE)
    # The publishing thread is held inside the first batch until the second delivery gave up.
    holding, release = threading.Event(), threading.Event()
    real = publisher._publish

    def held(batch: list[Any]) -> list[str | None]:
        holding.set()
        release.wait(10)
        return real(batch)

    publisher._publish = held  # type: ignore[method-assign]

    async def run() -> tuple[str | None, bool]:
        sent = asyncio.ensure_future(publisher.publish(call, first))
        await asyncio.get_running_loop().run_in_executor(None, holding.wait, 10)
        try:
            await asyncio.wait_for(publisher.publish(call, late), 0.2)
            gave_up = False
        except TimeoutError:
            gave_up = True
        release.set()
        return await sent, gave_up

    try:
        assert asyncio.run(run()) == (None, True)
        time.sleep(0.5)  # the thread's next turn, which finds the late one abandoned
    finally:
        publisher.close()
    assert [m["headers"]["id"] for m in queued(broker_url, QUEUE)] == [str(first)]


def test_a_batch_that_raised_is_answered_and_the_publisher_goes_on(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong with one batch (here, once, before any message is sent) is that
    batch's answer, and the publishing thread goes on: the next tasks are published."""
    publisher = Publisher(broker_url, timeout=5)
    publish = publisher._publish
    calls = iter([RuntimeError("the broker's client broke")])

    def once(batch: Any) -> list[str | None]:
        for exc in calls:
            raise exc
        return publish(batch)

    monkeypatch.setattr(publisher, "_publish", once)
    first = (CeleryCallback("shop.tasks.expire_order", [1], {}, QUEUE), uuid.uuid4())
    second = (CeleryCallback("shop.tasks.expire_order", [2], {}, QUEUE), uuid.uuid4())

    def answer(call: tuple[CeleryCallback, uuid.UUID]) -> str | None:
        # A thread that died would leave it waiting forever.
        return asyncio.run(asyncio.wait_for(publisher.publish(*call), 10))

    try:
        assert answer(first) == "the broker's client broke"
        assert answer(second) is None
    finally:
        publisher.close()
    assert [m["headers"]["id"] for m in queued(broker_url, QUEUE)] == [str(second[1])]
