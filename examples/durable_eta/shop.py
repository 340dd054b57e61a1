"""A shop's Celery application: one task that expires an unpaid order, and records each run in
Redis (task id, arguments, time) so that you can see it ran once, and under which id.

    SHOP_BROKER_URL=redis://127.0.0.1:6379/6 celery -A examples.durable_eta.shop worker -Q shop
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import redis
from celery import Celery, Task

RUNS = "shop:runs"

app = Celery("shop", broker=os.environ.get("SHOP_BROKER_URL", "redis://127.0.0.1:6379/6"))
app.conf.task_default_queue = "shop"
app.conf.task_serializer = "json"
app.conf.accept_content = ["json"]
app.conf.broker_connection_retry_on_startup = True


@functools.cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(app.conf.broker_url)


@app.task(name="shop.tasks.expire_order", bind=True)
def expire_order(self: Task, order_id: int, reason: str | None = None) -> str:
    run = {"task_id": self.request.id, "args": [order_id], "reason": reason, "at": time.time()}
    redis_client().rpush(RUNS, json.dumps(run))
    return f"order {order_id} expired ({reason})"


def runs() -> list[dict[str, Any]]:
    """Every run of the task so far, oldest first."""
    return [json.loads(raw) for raw in redis_client().lrange(RUNS, 0, -1)]
