"""The example Django shop (examples/django) schedules an order's expiry inside the order's own
transaction on Django's connection, with either of Django's PostgreSQL backends: committed, the
order and its timer exist; rolled back, neither ever did. Real PostgreSQL; each backend runs in a
process of its own (tests/support/django_shop.py), since Django picks its driver at import."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.processes import ROOT
from tests.support.services import TASK_BROKER_DATABASE, Services
from timers.models import TimerStatus
from timers.store import TimerStore


def place_orders(driver: str, database_url: str, services: Services) -> dict[str, Any]:
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": database_url,
        "TIMERS_TASK_BROKER_URL": services.redis_database(TASK_BROKER_DATABASE),
        "TIMERS_CELERY_TASKS": "orders.*",
    }
    run = subprocess.run(
        [sys.executable, "-m", "tests.support.django_shop", driver],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    answer: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_an_orders_expiry_exists_only_if_the_order_commits(
    driver: str, database_url: str, services: Services, store: TimerStore
) -> None:
    made = place_orders(driver, database_url, services)
    assert made["driver"] == driver  # the backend Django really used

    committed = store.get(uuid.UUID(made["committed"]["expiry_timer"]))
    assert committed.status is TimerStatus.PENDING
    assert committed.callback_config["task"] == "orders.expire_unpaid"
    assert committed.callback_config["args"] == [made["committed"]["id"]]
    assert committed.execute_at > datetime.now(UTC) + timedelta(hours=23)

    assert store.find(uuid.UUID(made["rolled_back"]["expiry_timer"])) is None
    with store.engine.connect() as conn:
        orders = conn.execute(text("SELECT id FROM orders_order")).scalars().all()
    assert orders == [made["committed"]["id"]]
    assert store.page().total == 1


def test_the_readme_snippet_is_part_of_the_example() -> None:
    def flat(code: str) -> str:
        return "\n".join(line.strip() for line in code.splitlines() if line.strip())

    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Django\n", 1)[1].split("\n## ", 1)[0]
    [snippet] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    example = (ROOT / "examples" / "django" / "orders" / "checkout.py").read_text()
    assert flat(snippet) in flat(example), snippet
