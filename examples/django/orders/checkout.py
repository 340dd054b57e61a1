"""Placing an order: the order and the timer that expires it are written in one transaction, on
Django's own connection. Committed, both exist; rolled back (here, or by a caller's enclosing
`atomic()`), neither ever did."""

from __future__ import annotations

import functools

from django.db import connection, transaction

from orders.models import Order
from timers import Timers

EXPIRE_AFTER = 24 * 3600  # seconds
EXPIRE_TASK = "orders.expire_unpaid"  # a task of the shop's own Celery app


@functools.cache
def shop_timers() -> Timers:
    """One `Timers` per process, from the environment (`DATABASE_URL`, `TIMERS_TASK_BROKER_URL`,
    `TIMERS_CELERY_TASKS=orders.*`)."""
    return Timers.from_env()


def place_order(amount_cents: int, timers: Timers | None = None) -> Order:
    timers = timers or shop_timers()
    with transaction.atomic():
        order = Order.objects.create(amount_cents=amount_cents)
        timer = timers.schedule(
            EXPIRE_TASK, args=[order.pk], countdown=EXPIRE_AFTER, connection=connection
        )
        order.expiry_timer = timer.id
        order.save(update_fields=["expiry_timer"])
    return order
