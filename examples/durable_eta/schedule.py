"""Durable eta for the shop's Celery app, three ways, then wait until each task ran (once, under its
timer's id).

    DATABASE_URL=…  TIMERS_API_URL=http://127.0.0.1:8080  API_KEY=…  SHOP_BROKER_URL=… \\
        python -m examples.durable_eta.schedule

It needs the timers stack (API, scheduler, worker) with `celery` callbacks allowed to reach the
shop (TIMERS_TASK_BROKER_URL=$SHOP_BROKER_URL TIMERS_CELERY_TASKS='shop.tasks.*'
TIMERS_CELERY_QUEUES=shop, set for this script too), and the shop's worker
(`celery -A examples.durable_eta.shop worker -Q shop`).
"""

from __future__ import annotations

import os
import sys
import time

from sqlalchemy import create_engine, text

import timers.celery
from examples.durable_eta.shop import app, expire_order, runs
from timers import Timers
from timers.client import Client


def main() -> int:
    database_url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1)

    # 1. Over the REST API, from any process that can reach it.
    client = Client(os.environ["TIMERS_API_URL"], api_key=os.environ["API_KEY"])
    by_rest = client.schedule("shop.tasks.expire_order", args=[1], queue="shop", countdown=2)

    # 2. From Python, in the same transaction as the order it is about: if this transaction
    #    rolls back, the timer never existed.
    api = Timers.from_env()
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS shop_orders (id int PRIMARY KEY)"))
        conn.execute(text("INSERT INTO shop_orders VALUES (2) ON CONFLICT DO NOTHING"))
        by_python = api.schedule(expire_order.s(2), countdown=2, connection=conn)

    # 3. No code change: once at start-up, then apply_async as always.
    timers.celery.durable_eta(app, threshold=1)
    by_drop_in = expire_order.apply_async((3,), countdown=2)

    ids = {str(by_rest.id), str(by_python.id), str(by_drop_in.id)}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ids <= {r["task_id"] for r in runs()}:
        time.sleep(0.2)
    time.sleep(1)  # a second run would show up by now
    ran = [r["task_id"] for r in runs() if r["task_id"] in ids]
    print(f"{len(set(ran))} of 3 ran, {len(ran) - len(set(ran))} twice")
    for name, timer_id in (
        ("rest", by_rest.id),
        ("python", by_python.id),
        ("drop-in", by_drop_in.id),
    ):
        print(f"  {name:8} task id {timer_id}: {client.get(timer_id).status.value}")
    api.close()
    engine.dispose()
    return 0 if sorted(ran) == sorted(ids) else 1


if __name__ == "__main__":
    sys.exit(main())
