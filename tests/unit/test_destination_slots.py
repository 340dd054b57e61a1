"""The per-destination caps of a worker process's engine: the engine's own, and a destination's
cap of its own (`OwnCap`, which `celery` callbacks share)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from timers.callbacks.celery import PUBLISHING, CeleryCallback
from timers.callbacks.task_publisher import BATCH
from timers.worker.destinations import DestinationSlots, OwnCap


async def most_at_once(slots: DestinationSlots, key: Hashable, holders: int) -> int:
    """How many of `holders` held `key`'s slots at once."""
    held, most = 0, 0

    async def hold() -> None:
        nonlocal held, most
        async with slots.take(key):
            held += 1
            most = max(most, held)
            await asyncio.sleep(0.01)
            held -= 1

    await asyncio.gather(*(hold() for _ in range(holders)))
    return most


def test_a_destination_gets_the_engines_cap_unless_it_has_its_own() -> None:
    slots = DestinationSlots(4)
    assert asyncio.run(most_at_once(slots, "https://a.example:443", 10)) == 4
    assert asyncio.run(most_at_once(slots, OwnCap("x", 7), 10)) == 7
    assert asyncio.run(most_at_once(slots, OwnCap("y", 40), 30)) == 30


def test_celery_tasks_share_two_publishing_batches_whatever_their_queue() -> None:
    queues = {CeleryCallback("shop.tasks.a", queue=q).destination() for q in ("a", "b", None)}
    assert queues == {PUBLISHING} and PUBLISHING.limit == 2 * BATCH
