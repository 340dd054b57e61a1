"""The OpenAPI contract (tests/support/openapi.py) of the schedules' operations on PostgreSQL, whose
refusals (of text it can't store, say) the in-memory store of tests/unit/test_openapi.py may not
share."""

from __future__ import annotations

from tests.support.openapi import keeps_its_contract
from tests.support.services import API_KEY
from timers.api import create_app
from timers.config import Settings
from timers.store import TimerStore


def test_every_schedule_operation_keeps_its_documented_contract(
    store: TimerStore, database_url: str
) -> None:
    app = create_app(Settings(database_url=database_url, api_key=API_KEY), store=store)
    checked = keeps_its_contract(app, lambda path: path.startswith("/schedules"))
    assert checked == 8
