"""Testing code that schedules timers, with the `celery-timers` pytest plugin (installed with the
package): "an unpaid order expires after 24 hours" runs in milliseconds, with no PostgreSQL, no
broker and no waiting. Run it with `pytest examples/testing`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery import Celery

from timers import Timers

app = Celery("shop", set_as_current=False)
orders: dict[int, str] = {}


@app.task(name="shop.expire_order")
def expire_order(order_id: int) -> None:
    if orders.get(order_id) == "unpaid":
        orders[order_id] = "expired"


def place_order(timers: Timers, order_id: int) -> None:
    """The code under test: an order, and its expiry a day later."""
    orders[order_id] = "unpaid"
    timers.schedule(expire_order.s(order_id), countdown=24 * 3600)


@pytest.fixture
def timers_celery_app() -> Celery:
    """Fired timers run their tasks on this app (the plugin's fixture returns None)."""
    return app


@pytest.fixture(autouse=True)
def no_orders() -> Iterator[None]:
    yield
    orders.clear()


def test_an_unpaid_order_expires_after_24_hours(memory_timers) -> None:  # type: ignore[no-untyped-def]
    place_order(memory_timers, 42)

    memory_timers.advance(timedelta(hours=23, minutes=59))
    assert orders[42] == "unpaid"

    memory_timers.advance(timedelta(minutes=1))
    assert orders[42] == "expired"


def test_a_paid_order_stays_paid(memory_timers) -> None:  # type: ignore[no-untyped-def]
    place_order(memory_timers, 7)
    orders[7] = "paid"

    fired = memory_timers.advance(timedelta(days=1))
    assert [f.config["task"] for f in fired] == ["shop.expire_order"]
    assert orders[7] == "paid"
