"""Run in a process of its own by tests/integration/test_django.py, once per Django PostgreSQL
backend (Django picks its driver when it is imported: psycopg 3 if it can, else psycopg2):

    python -m tests.support.django_shop psycopg2|psycopg

It migrates the example shop (examples/django) into `DATABASE_URL`, places one order through the
view (committed) and one inside an `atomic()` block that then rolls back, and prints what it made
as one JSON line; the test reads the database to see what really exists."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django"


class RolledBack(Exception):
    pass


def main(driver: str) -> None:
    if driver == "psycopg2":
        sys.modules["psycopg"] = None  # type: ignore[assignment]  # hides psycopg 3 from Django
    sys.path.insert(0, str(PROJECT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "shopsite.settings"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test import Client
    from orders.checkout import place_order

    call_command("migrate", verbosity=0)
    response = Client().post("/orders", {"amount_cents": 1200})
    assert response.status_code == 201, response.content
    committed = response.json()
    made = {}
    try:
        with transaction.atomic():
            order = place_order(900)
            made = {"id": order.pk, "expiry_timer": str(order.expiry_timer)}
            raise RolledBack  # e.g. payment refused after the order was placed
    except RolledBack:
        pass
    answer = {"driver": connection.Database.__name__, "committed": committed, "rolled_back": made}
    print(json.dumps(answer))


if __name__ == "__main__":
    main(sys.argv[1])
