"""The statements a store method sends, and their plans: those of the claim and of the workers'
statements find their rows by primary key when many timers are executing and the table's
statistics were gathered while none was (as after a burst, or a worker falling behind), so their
cost does not grow with the backlog; a top-up sends as many statements for one schedule as for
many."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from tests.support.plans import explained, statements_sent
from tests.support.timers import now
from timers.schedules.model import ScheduleSpec
from timers.schedules.slots import Timing
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


def test_a_top_up_sends_the_same_statements_for_one_schedule_or_many(store: TimerStore) -> None:
    """At :00 a scheduler tops up thousands of schedules at once: statements per schedule (or a
    statement built anew for each) made that minute's top-ups take longer than the minute."""
    config = {"type": "http", "url": "http://127.0.0.1:9/hook"}
    start = now() + timedelta(seconds=30)
    timing = Timing(start_at=start, every=60.0)
    made = [store.schedules.create(ScheduleSpec(timing, "http", config)) for _ in range(40)]
    with store.engine.begin() as conn:  # as if their first slots had fired
        conn.execute(text("UPDATE schedules SET materialized_until = now() - interval '1 s'"))

    def statements(ids: list[Any]) -> int:
        with statements_sent(store) as sent:
            done = store.schedules.top_up(ids)
        assert done.schedules == len(ids) and done.made >= len(ids)
        return len(sent)

    assert statements([s.id for s in made[:1]]) == statements([s.id for s in made[1:]])
