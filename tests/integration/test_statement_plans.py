"""The plans of the claim's and the workers' statements when many timers are executing and the
table's statistics were gathered while none was (as after a burst, or a worker falling behind):
each finds its rows by primary key, so its cost does not grow with the backlog."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import text

from tests.support.plans import explained
from tests.support.timers import now
from timers.storage import NewTimer, Outcome
from timers.store import TimerStore

EXECUTING = 3000
FUTURE = 30_000  # pending beside them, due tomorrow: a table where a full scan costs what it does
STATUS_INDEXES = ("ix_timers_status_created_at_id", "ix_timers_executing_claimed_at")


def test_statements_on_claimed_timers_find_them_by_primary_key_beside_a_backlog(
    store: TimerStore,
) -> None:
    config = {"type": "http", "url": "http://127.0.0.1:9/hook"}
    made = store.create_many(
        [NewTimer(now() - timedelta(seconds=1), "http", config) for _ in range(EXECUTING)]
    )
    with store.engine.connect() as conn:
        conn.execute(
            text(
                "INSERT INTO timers (id, execute_at, callback_type, callback_config, status) "
                "SELECT gen_random_uuid(), now() + interval '1 day', 'http', "
                "CAST(:config AS jsonb), 'pending' FROM generate_series(1, :rows)"
            ),
            {"config": json.dumps(config), "rows": FUTURE},
        )
        conn.execute(text("ANALYZE timers"))  # every row pending: `executing` looks rare
    ids = [t.id for t in made]
    claims = []
    for start in range(0, len(ids), 500):
        claims += [(c.id, c.claim) for c in store.claim_due(ids[start : start + 500])]
    assert len(claims) == EXECUTING

    plans = {
        "claim": explained(store, lambda: store.claim_due(ids[:500]), "WITH"),
        "begin": explained(store, lambda: store.begin_deliveries(claims[:50], 15.0), "UPDATE"),
        "renew": explained(store, lambda: store.renew_leases(claims[:50], 15.0), "UPDATE"),
        "finish": explained(
            store,
            lambda: store.finish_many([Outcome(i, a, None) for i, a in claims[50:100]]),
            "UPDATE",
        ),
        "release": explained(store, lambda: store.release(claims[100:150]), "UPDATE"),
    }
    for name, plan in plans.items():
        assert "timers_pkey" in plan, f"{name}:\n{plan}"
        assert not any(index in plan for index in STATUS_INDEXES), f"{name}:\n{plan}"


def test_the_claim_finds_due_timers_by_primary_key_beside_many_pending_ahead(
    store: TimerStore,
) -> None:
    """Statistics gathered over a table of timers due days ahead make `execute_at <= now()` look
    empty, so the planner would walk an index on `execute_at` from its start, through the entries
    of every timer due before (claimed, finished), and filter the ids (at 10,000,000 pending rows the
    claim then slowed steady delivery by a third). It must look the ids up by key instead."""
    config = {"type": "http", "url": "http://127.0.0.1:9/hook"}
    with store.engine.connect() as conn:
        conn.execute(
            text(
                "INSERT INTO timers (id, execute_at, callback_type, callback_config, status) "
                "SELECT gen_random_uuid(), now() + interval '1 day' + n * interval '1 second', "
                "'http', CAST(:config AS jsonb), 'pending' FROM generate_series(1, :rows) n"
            ),
            {"config": json.dumps(config), "rows": FUTURE},
        )
        conn.execute(text("ANALYZE timers"))  # nothing due: `execute_at <= now()` looks empty
    due = store.create_many(
        [NewTimer(now() - timedelta(seconds=1), "http", config) for _ in range(50)]
    )
    ids = [t.id for t in due]
    plan = explained(store, lambda: store.claim_due(ids), "WITH")
    due_scan = plan.split("CTE skipped")[0]  # the CTE that finds and locks the due rows
    assert "timers_pkey" in due_scan, plan
    assert not any(i in plan for i in ("ix_timers_pending_execute_at", "ix_timers_execute_at_id"))
