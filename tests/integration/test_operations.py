"""Operating it: metrics after real traffic, retention by the scheduler and by `timers purge`,
the indexes behind every list filter (EXPLAIN), cursor pages while timers are being made, bulk
cancel racing claims, and JSON logs. Real PostgreSQL, Redis, worker, scheduler and receiver."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import text

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.plans import explained
from tests.support.receiver import Receiver, wait_until
from tests.support.services import LOCAL_NETWORKS, Services
from tests.support.timers import add_timer, now
from timers.cli import main as timers_cli
from timers.models import TimerStatus
from timers.scheduler.retention import Retention
from timers.storage import (
    NewTimer,
    Outcome,
    Purged,
    PurgePosition,
    StoreUnavailable,
    TimerFilter,
)
from timers.store import TimerStore, database_engine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """The samples of a /metrics page, by their full name with labels."""
    samples = {}
    for line in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


# -- metrics, retention and logs of the real processes ----------------------------------------


@pytest.fixture(scope="module")
def env(services: Services, template_database: str) -> Iterator[dict[str, str]]:
    name = create_database(services, template_database)
    broker = services.redis_database(4)
    redis.Redis.from_url(broker).flushdb()
    yield {
        "DATABASE_URL": services.database_url(name),
        "REDIS_URL": broker,
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "TIMERS_CALLBACK_TIMEOUT": "5",
        "TIMERS_RETENTION": "1h",
        "LOG_FORMAT": "json",
    }
    redis.Redis.from_url(broker).flushdb()
    drop_database(services, name)


@pytest.fixture(scope="module")
def module_store(env: dict[str, str]) -> Iterator[TimerStore]:
    engine = database_engine(env["DATABASE_URL"])
    yield TimerStore(engine)
    engine.dispose()


def age_finished(store: TimerStore, ids: list[uuid.UUID], hours: float) -> None:
    """Make finished timers look finished `hours` ago (the trigger sets updated_at on UPDATE,
    so it is switched off for this one statement)."""
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE timers DISABLE TRIGGER timers_touch_updated_at"))
        conn.execute(
            text(
                "UPDATE timers SET updated_at = now() - make_interval(hours => :h) WHERE id = ANY(:ids)"
            ),
            {"h": hours, "ids": ids},
        )
        conn.execute(text("ALTER TABLE timers ENABLE TRIGGER timers_touch_updated_at"))


def test_metrics_retention_and_json_logs_of_the_running_processes(
    env: dict[str, str], module_store: TimerStore
) -> None:
    store = module_store
    # Finished long ago (to be purged), finished just now (kept), pending and executing (kept).
    old = [add_timer(store, now() - timedelta(seconds=1)).id for _ in range(6)]
    store.claim_due(old)
    store.begin_deliveries([(i, 1) for i in old], lease=60)
    store.finish_many([Outcome(i, 1, None if n % 2 else "HTTP 500") for n, i in enumerate(old[:4])])
    store.cancel(add_timer(store, now() + timedelta(hours=1)).id)
    canceled_old = store.page(where=TimerFilter(status=TimerStatus.CANCELED)).timers[0].id
    age_finished(store, [*old[:4], canceled_old], hours=2)
    executing_old = old[4:]  # claimed and started, never finished: not finished, never purged
    recent = add_timer(store, now() - timedelta(seconds=1)).id
    store.claim_due([recent])
    store.begin_deliveries([(recent, 1)], lease=60)
    store.finish_many([Outcome(recent, 1, None)])
    waiting = add_timer(store, now() + timedelta(hours=1)).id

    receiver = Receiver().start()
    worker_port, scheduler_port = free_port(), free_port()
    worker = processes.worker({**env, "TIMERS_METRICS_PORT": str(worker_port)})
    scheduler = processes.scheduler({**env, "TIMERS_METRICS_PORT": str(scheduler_port)})
    try:
        assert worker.wait_for_output("ready", 60), worker.output()
        assert scheduler.wait_for_output("scheduler started", 30), scheduler.output()
        ok = [
            add_timer(store, now() + timedelta(seconds=0.5), receiver.url("/hook")).id
            for _ in range(3)
        ]
        bad = add_timer(store, now() + timedelta(seconds=0.5), receiver.url("/status/404")).id

        def settled() -> bool:
            return all(
                store.get(i).status in (TimerStatus.COMPLETED, TimerStatus.FAILED)
                for i in [*ok, bad]
            )

        assert wait_until(settled, 30, 0.2), scheduler.output()[-3000:]

        # The worker's main process serves the sum over its pool processes.
        def counted() -> bool:
            found = scrape(worker_port)
            return found.get('timers_deliveries_total{kind="http",outcome="completed"}') == 3

        assert wait_until(counted, 10, 0.2), scrape(worker_port)
        samples = scrape(worker_port)
        assert samples['timers_deliveries_total{kind="http",outcome="failed"}'] == 1
        assert samples['timers_callback_lateness_seconds_count{kind="http"}'] == 4
        assert samples['timers_delivery_duration_seconds_count{kind="http"}'] == 4
        assert samples["timers_deliveries_in_flight"] == 0
        assert 0 < samples['timers_callback_lateness_seconds_sum{kind="http"}'] < 60

        sched = scrape(scheduler_port)
        assert sched["timers_enqueued_total"] == 4
        assert sched["timers_claim_duration_seconds_count"] >= 1
        assert sched["timers_load_duration_seconds_count"] >= 1
        assert sched["timers_due_backlog"] == 0 and sched["timers_pending"] == 1
        assert "timers_cache_size" in sched

        # Retention (TIMERS_RETENTION=1h; its first pass 10 s after start): exactly the
        # finished timers older than an hour go.
        gone = [*old[:4], canceled_old]
        assert wait_until(lambda: all(store.find(i) is None for i in gone), 30, 0.5), (
            scheduler.output()[-3000:]
        )
        assert scrape(scheduler_port)["timers_purged_total"] == 5
        for kept in [*executing_old, recent, waiting, *ok, bad]:
            assert store.find(kept) is not None
    finally:
        scheduler.stop()
        worker.stop()
        receiver.stop()

    # LOG_FORMAT=json: every line the scheduler wrote is one JSON object, with the timer's id
    # where there is one.
    lines = [json.loads(line) for line in scheduler.output().splitlines() if line.strip()]
    spawned = [entry for entry in lines if entry["message"].startswith("Spawned callback")]
    assert len(spawned) == 4 and {e["timer_id"] for e in spawned} == {str(i) for i in [*ok, bad]}
    assert any("retention: deleted 5" in entry["message"] for entry in lines)


def test_purge_command_deletes_finished_timers_older_than_asked(
    env: dict[str, str], module_store: TimerStore, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    store = module_store
    made = [add_timer(store, now() - timedelta(seconds=1)).id for _ in range(3)]
    store.claim_due(made)
    store.begin_deliveries([(i, 1) for i in made], lease=60)
    store.finish_many([Outcome(i, 1, None) for i in made])
    age_finished(store, made[:2], hours=24 * 31)
    monkeypatch.setenv("DATABASE_URL", env["DATABASE_URL"])
    assert timers_cli(["purge", "--older-than", "soon"]) == 2
    assert "--older-than: a duration such as 30d" in capsys.readouterr().err
    assert timers_cli(["purge", "--older-than", "30d"]) == 0
    assert "deleted 2 finished timers older than 30d" in capsys.readouterr().out
    assert [store.find(i) is None for i in made] == [True, True, False]


def test_one_purge_at_a_time(store: TimerStore) -> None:
    with store.engine.connect() as holder:
        holder.execute(text("BEGIN"))
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x74696D657273})
        assert store.purge_finished(0.0, 100) is None
        holder.execute(text("COMMIT"))
    assert store.purge_finished(0.0, 100) == (0, None)


def test_a_purge_batch_goes_on_where_the_last_one_ended(store: TimerStore) -> None:
    """Batches walk the finished timers in (status, updated_at, id) order, each after the
    previous one's last row, instead of starting again from the oldest row (and walking the index
    entries of every row already deleted): a row that turns up behind the position is left for
    the next pass."""
    made = [add_timer(store, now() - timedelta(seconds=1)).id for _ in range(5)]
    store.claim_due(made)
    store.begin_deliveries([(i, 1) for i in made], lease=60)
    store.finish_many([Outcome(i, 1, None if i != made[4] else "HTTP 410") for i in made])
    for hours, timer_id in zip([40, 39, 38, 37, 36], made, strict=True):
        age_finished(store, [timer_id], hours=hours)
    first = store.purge_finished(3600, 2)
    assert first is not None and first.deleted == 2
    assert first.next is not None and first.next.id == made[1]
    assert first.next.status is TimerStatus.COMPLETED
    age_finished(store, [made[3]], hours=41)  # now the oldest: behind the position
    second = store.purge_finished(3600, 2, first.next)  # made[2], then the failed made[4]
    assert second is not None and second.deleted == 2 and second.next is not None
    assert second.next.status is TimerStatus.FAILED and second.next.id == made[4]
    assert store.purge_finished(3600, 2, second.next) == (0, None)  # nothing after it: done
    assert [store.find(i) is None for i in made] == [True, True, True, False, True]
    assert store.purge_finished(3600, 2) == (1, None)  # the next pass
    assert store.find(made[3]) is None


def test_purge_keeps_a_timer_redriven_while_it_runs(store: TimerStore) -> None:
    """A failed timer the purge has picked but not yet deleted is redriven by another
    transaction: the purge waits for it and then leaves the timer, now pending, alone."""
    made = [add_timer(store, now() - timedelta(seconds=1)).id for _ in range(2)]
    store.claim_due(made)
    store.begin_deliveries([(i, 1) for i in made], lease=60)
    store.finish_many([Outcome(i, 1, "HTTP 410") for i in made])
    age_finished(store, made, hours=24 * 31)
    redriven, other = made
    result: list[Purged | None] = []
    with store.engine.connect() as api:
        api.execute(text("BEGIN"))
        api.execute(
            text("UPDATE timers SET status = 'pending', execute_at = now() WHERE id = :id"),
            {"id": redriven},
        )
        purge = threading.Thread(target=lambda: result.append(store.purge_finished(3600, 10)))
        purge.start()
        purge.join(1.0)
        assert purge.is_alive(), "the purge should wait for the row another transaction holds"
        api.execute(text("COMMIT"))
    purge.join(10)
    assert result == [(1, None)]
    assert store.find(other) is None
    kept = store.find(redriven)
    assert kept is not None and kept.status is TimerStatus.PENDING


def test_a_row_held_elsewhere_fails_the_purge_batch_instead_of_stalling_it(
    store: TimerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("timers.store.retention.PURGE_LOCK_TIMEOUT", 0.3)
    made = add_timer(store, now() - timedelta(seconds=1)).id
    store.claim_due([made])
    store.begin_deliveries([(made, 1)], lease=60)
    store.finish_many([Outcome(made, 1, None)])
    age_finished(store, [made], hours=24 * 31)
    with store.engine.connect() as other:
        other.execute(text("BEGIN"))
        other.execute(text("SELECT 1 FROM timers WHERE id = :id FOR UPDATE"), {"id": made})
        with pytest.raises(StoreUnavailable, match="lock timeout"):
            store.purge_finished(3600, 10)
        other.execute(text("ROLLBACK"))
    assert store.purge_finished(3600, 10) == (1, None)


def test_a_pass_cut_short_by_an_error_goes_on_from_where_it_was(
    store: TimerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second batch of a pass meets a row held elsewhere (lock timeout): the next try goes on
    after the first batch's last row instead of starting again from the oldest."""
    monkeypatch.setattr("timers.store.retention.PURGE_LOCK_TIMEOUT", 0.3)
    made = [add_timer(store, now() - timedelta(seconds=1)).id for _ in range(5)]
    store.claim_due(made)
    store.begin_deliveries([(i, 1) for i in made], lease=60)
    store.finish_many([Outcome(i, 1, None) for i in made])
    for hours, timer_id in zip([40, 39, 38, 37, 36], made, strict=True):
        age_finished(store, [timer_id], hours=hours)
    starts: list[uuid.UUID | None] = []
    purge_finished = store.purge_finished

    def recorded(older_than: float, limit: int, at: PurgePosition | None = None) -> Purged | None:
        starts.append(None if at is None else at.id)
        return purge_finished(older_than, limit, at)

    monkeypatch.setattr(store, "purge_finished", recorded)
    retention = Retention(store, 3600, batch=2)
    with store.engine.connect() as other:
        other.execute(text("BEGIN"))
        other.execute(text("SELECT 1 FROM timers WHERE id = :id FOR UPDATE"), {"id": made[2]})
        with pytest.raises(StoreUnavailable, match="lock timeout"):
            retention.purge(threading.Event())
        other.execute(text("ROLLBACK"))
    assert starts == [None, made[1]]
    assert [store.find(i) is None for i in made] == [True, True, False, False, False]
    assert retention.purge(threading.Event()) == 3
    assert starts == [None, made[1], made[1], made[3]]  # went on; a short batch ended the pass
    assert retention.position is None
    assert all(store.find(i) is None for i in made)


# -- listing at scale ---------------------------------------------------------------------------


def fill(store: TimerStore, rows: int) -> None:
    """`rows` timers of every status, kind and tenant, spread over a week, then ANALYZE."""
    with store.engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO timers (id, created_at, updated_at, execute_at, callback_type,
                                    callback_config, status, metadata)
                SELECT gen_random_uuid(),
                       now() - make_interval(secs => n * 30),
                       now() - make_interval(secs => n * 30),
                       now() + make_interval(secs => (n * 7919) % 604800),
                       (ARRAY['http', 'http', 'http', 'nats', 'celery'])[1 + n % 5],
                       '{"url": "http://127.0.0.1:9/hook"}'::jsonb,
                       (ARRAY['completed', 'completed', 'completed', 'failed', 'canceled',
                              'pending'])[1 + n % 6],
                       jsonb_build_object('tenant', 't' || (n % 500))
                FROM generate_series(1, :rows) AS n
                """
            ),
            {"rows": rows},
        )
        conn.execute(text("ANALYZE timers"))
        conn.execute(text("ANALYZE timer_labels"))


def captured_plan(store: TimerStore, **page: Any) -> str:
    """EXPLAIN of exactly the statement `store.page(**page)` runs."""
    return explained(store, lambda: store.page(with_total=False, **page), "SELECT")


@pytest.fixture
def big(store: TimerStore) -> TimerStore:
    fill(store, 30_000)
    return store


def test_every_list_filter_and_order_is_served_by_an_index(big: TimerStore) -> None:
    late = now() + timedelta(days=3)
    middle = big.page(limit=1, offset=15_000, with_total=False).timers[0]
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "newest first": ({}, "ix_timers_created_at_id"),
        "oldest first, deep": (
            {"order": "asc", "after": (middle.created_at, middle.id)},
            "ix_timers_created_at_id",
        ),
        "by status": (
            {"where": TimerFilter(status=TimerStatus.FAILED)},
            "ix_timers_status_created_at_id",
        ),
        "by due time": ({"sort": "execute_at", "order": "asc"}, "ix_timers_execute_at_id"),
        "a due-time window": (
            {
                "where": TimerFilter(
                    execute_after=late, execute_before=late + timedelta(minutes=5)
                ),
                "sort": "execute_at",
            },
            "ix_timers_execute_at_id",
        ),
        # A label in creation order: the labels' index from the position on, timers by id.
        "by metadata": (
            {"where": TimerFilter(metadata={"tenant": "t42"})},
            "ix_timer_labels_key_value_created_at",
        ),
        "by metadata, oldest first, deep": (
            {
                "where": TimerFilter(metadata={"tenant": "t42"}),
                "order": "asc",
                "after": (middle.created_at, middle.id),
            },
            "ix_timer_labels_key_value_created_at",
        ),
        # More than one condition: walking one label could read all its timers for a few.
        "by metadata and status": (
            {"where": TimerFilter(metadata={"tenant": "t42"}, status=TimerStatus.FAILED)},
            "ix_timers_",
        ),
        # No label in the filter, or another order: the GIN index finds the rows.
        "by nested metadata": (
            {"where": TimerFilter(metadata={"plan": {"tier": "gold"}})},
            "ix_timers_metadata",
        ),
        "by metadata, due time": (
            {"where": TimerFilter(metadata={"tenant": "t42"}), "sort": "execute_at"},
            "ix_timers_metadata",
        ),
        "recent failures": (
            {"where": TimerFilter(status=TimerStatus.FAILED), "sort": "updated_at"},
            "ix_timers_finished_updated_at",
        ),
        # The kind is a filter on the ordered scan (three kinds: never selective enough alone).
        "by kind": ({"where": TimerFilter(callback_type="nats")}, "ix_timers_created_at_id"),
    }
    for name, (page, index) in cases.items():
        plan = captured_plan(big, limit=50, **page)
        assert index in plan, f"{name}:\n{plan}"
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"
        if name == "by metadata and status":
            assert "timer_labels" not in plan, f"{name}:\n{plan}"
        if index == "ix_timer_labels_key_value_created_at":  # read in order: only its rows
            assert "Sort" not in plan, f"{name}:\n{plan}"


# Metadata whose pairs are labels and pairs that are not (too long, nested, a float, null, an
# integer too large, an array), with a filter for each, some meeting values that only look alike.
LONG = "x" * 201
LABELLED: list[dict[str, Any]] = [
    {"tenant": "acme"},
    {"tenant": "acme", "n": 5},
    {"tenant": "globex", "n": 5.0},
    {"n": -7, "flag": True},
    {"flag": 1},
    {"tags": ["acme"], "tenant": "initech"},
    {"city": "münchen" * 28 + "日本人"},  # 199 characters, more bytes
    {"long": LONG, "tenant": "acme"},
    {LONG: "x"},
    {"big": 10**15, "plan": {"tier": "gold"}},
    {"none": None},
    {"tenant": "acme", "n": 2.5},
]
FILTERS: list[dict[str, Any]] = [
    {"tenant": "acme"},
    {"tenant": "acme", "n": 5},
    {"n": 5},
    {"n": -7},
    {"flag": True},
    {"flag": 1},
    {"tags": "acme"},
    {"tags": ["acme"]},
    {"city": "münchen" * 28 + "日本人"},
    {"long": LONG},
    {"long": LONG, "tenant": "acme"},
    {LONG: "x"},
    {"big": 10**15},
    {"plan": {"tier": "gold"}, "big": 10**15},
    {"none": None},
    {"n": 2.5},
    {"tenant": "nobody"},
]


def contained(store: TimerStore, metadata: dict[str, Any]) -> list[uuid.UUID]:
    """The timers whose metadata contains `metadata`, newest first, by the GIN index alone."""
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT id FROM timers WHERE metadata @> CAST(:m AS jsonb) "
                    "ORDER BY created_at DESC, id DESC"
                ),
                {"m": json.dumps(metadata)},
            ).scalars()
        )


def labels(store: TimerStore) -> list[tuple[str, Any, uuid.UUID]]:
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT key, value, timer_id FROM timer_labels ORDER BY 1, 3"))
        return [(r.key, r.value, r.timer_id) for r in rows]


def test_labels_follow_each_timer_and_filter_exactly_as_containment(store: TimerStore) -> None:
    """Pages by a metadata filter (read through the labels' index when the filter has a label)
    hold exactly the timers `metadata @> filter` holds, in the same order; the labels follow a
    timer's create, each change of its metadata and its purge."""
    made = [
        store.create(
            NewTimer(now() + timedelta(hours=1), "http", {"url": "http://127.0.0.1:9/"}, m)
        ).id
        for m in LABELLED * 3
    ]
    for metadata in FILTERS:
        expected = contained(store, metadata)
        for limit in (2, 50):
            seen: list[uuid.UUID] = []
            after = None
            while True:
                page = store.page(
                    where=TimerFilter(metadata=metadata), limit=limit, after=after, with_total=True
                )
                assert page.total == len(expected), metadata
                seen += [t.id for t in page.timers]
                if page.next is None:
                    break
                after = page.next
            assert seen == expected, (metadata, limit)
    # Labels: the short string, boolean and small integer pairs, nothing else.
    first = {key: value for key, value, timer_id in labels(store) if timer_id == made[0]}
    assert first == {"tenant": "acme"}
    assert {k for k, _, i in labels(store) if i in made[:12]} == {"tenant", "n", "flag", "city"}
    # A change of metadata moves the timer's labels; no metadata, no labels.
    store.update_pending(made[0], {"metadata": {"tenant": "umbrella", "n": 9}})
    assert [
        t.id for t in store.page(where=TimerFilter(metadata={"tenant": "umbrella"})).timers
    ] == [made[0]]
    assert made[0] not in contained(store, {"tenant": "acme"})
    assert made[0] not in [
        t.id for t in store.page(where=TimerFilter(metadata={"tenant": "acme"}), limit=100).timers
    ]
    store.update_pending(made[1], {"metadata": None})
    assert sorted((k, v) for k, v, i in labels(store) if i in made[:2]) == [
        ("n", 9),
        ("tenant", "umbrella"),
    ]
    # A purge takes the labels of the timers it deletes, and only theirs.
    store.cancel_matching(TimerFilter(metadata={"tenant": "acme"}))
    gone = contained(store, {"tenant": "acme"})
    age_finished(store, gone, hours=2)
    assert store.purge_finished(3600, 500) == (len(gone), None)
    assert not {i for _, _, i in labels(store)} & set(gone)
    with store.engine.connect() as conn:
        orphans = conn.execute(
            text(
                "SELECT count(*) FROM timer_labels l "
                "WHERE NOT EXISTS (SELECT 1 FROM timers t WHERE t.id = l.timer_id)"
            )
        ).scalar_one()
        missing = conn.execute(
            text(
                "SELECT count(*) FROM timers t, timers_labels_of(t.metadata) o "
                "WHERE NOT EXISTS (SELECT 1 FROM timer_labels l WHERE l.timer_id = t.id "
                "AND l.key = o.key AND l.value = o.value AND l.created_at = t.created_at)"
            )
        ).scalar_one()
    assert (orphans, missing) == (0, 0)
    with store.engine.begin() as conn:
        conn.execute(text("TRUNCATE timers"))
    assert labels(store) == []


def test_cursor_pages_never_skip_or_repeat_while_timers_are_made(store: TimerStore) -> None:
    original = {add_timer(store, now() + timedelta(minutes=m)).id for m in range(60)}
    for sort, order in [("created_at", "desc"), ("created_at", "asc"), ("execute_at", "asc")]:
        seen: list[uuid.UUID] = []
        after = None
        while True:
            page = store.page(limit=7, sort=sort, order=order, after=after, with_total=False)
            seen += [t.id for t in page.timers]
            for minute in (1, 30, 90):  # before, among and after the ones being read
                add_timer(store, now() + timedelta(minutes=minute, seconds=1))
            if page.next is None:
                break
            after = page.next
        assert len(seen) == len(set(seen)), (sort, order)
        assert original <= set(seen), (sort, order)


def test_bulk_cancel_racing_claims_cancels_only_what_was_still_pending(store: TimerStore) -> None:
    batch = [
        NewTimer(
            now() - timedelta(seconds=1),
            "http",
            {"type": "http", "url": "http://127.0.0.1:9/hook"},
            metadata={"batch": "race"},
        )
        for _ in range(3000)
    ]
    ids = [t.id for t in store.create_many(batch)]
    claimed: list[uuid.UUID] = []
    canceled: list[int] = []
    start = threading.Barrier(2)

    def claim() -> None:
        start.wait()
        for offset in range(0, len(ids), 50):
            claimed.extend(t.id for t in store.claim_due(ids[offset : offset + 50]))

    def cancel() -> None:
        start.wait()
        canceled.append(store.cancel_matching(TimerFilter(metadata={"batch": "race"})))

    threads = [threading.Thread(target=claim), threading.Thread(target=cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = {
        t.id: t.status
        for t in store.page(
            limit=200, where=TimerFilter(metadata={"batch": "race"}), with_total=False
        ).timers
    }
    counts, _ = store.counts()
    assert counts["executing"] == len(claimed) and counts["canceled"] == canceled[0]
    assert len(claimed) + canceled[0] == len(ids), (len(claimed), canceled)
    assert len(set(claimed)) == len(claimed)
    for timer_id in claimed[:200]:
        assert store.get(timer_id).status is TimerStatus.EXECUTING
    assert all(s in (TimerStatus.EXECUTING, TimerStatus.CANCELED) for s in statuses.values())


def test_a_claim_skips_a_row_another_transaction_holds_instead_of_waiting(
    store: TimerStore,
) -> None:
    held, free = (add_timer(store, now() - timedelta(seconds=1)).id for _ in range(2))
    with store.engine.connect() as holder:
        holder.execute(text("BEGIN"))
        holder.execute(text("SELECT 1 FROM timers WHERE id = :id FOR UPDATE"), {"id": held})
        claimed: list[Any] = []
        claiming = threading.Thread(target=lambda: claimed.extend(store.claim_due([held, free])))
        claiming.start()
        claiming.join(5)
        waited = claiming.is_alive()
        holder.execute(text("ROLLBACK"))  # lets a claim that waited finish
        claiming.join(5)
        assert not waited, "the claim waited for the row lock"
        assert [t.id for t in claimed] == [free]
    assert [t.id for t in store.claim_due([held])] == [held]


def test_a_stray_notification_is_ignored_not_a_lost_connection(store: TimerStore) -> None:
    feed = store.changes()
    feed.open()
    try:
        with store.engine.connect() as conn:
            conn.execute(text("NOTIFY timers_changed, 'garbage'"))
            conn.execute(text("NOTIFY timers_changed, ''"))
        timer = add_timer(store, now() + timedelta(seconds=30))
        changes: list[Any] = []
        assert wait_until(lambda: changes.extend(feed.wait(0.2)) or changes, 5)  # type: ignore[func-returns-value]
        assert [(c.timer_id, c.pending) for c in changes] == [(timer.id, True)]
    finally:
        feed.close()


def test_purge_refuses_a_batch_of_nothing(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_code:
        timers_cli(["purge", "--older-than", "1d", "--batch", "0"])
    assert exit_code.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_a_purge_batch_reads_the_finished_index_and_deletes_by_id(big: TimerStore) -> None:
    """Every finished row is old enough (`older_than` 0): the batch still finds its rows in
    ix_timers_finished_updated_at from where the last one ended, and deletes them by primary
    key, rather than walking every finished row for each one it deletes."""
    first = big.purge_finished(0.0, 500)
    assert first is not None and first.next is not None
    plan = explained(big, lambda: big.purge_finished(0.0, 500, first.next), "WITH LOCK")
    finding = plan[plan.index("using ix_timers_finished_updated_at on timers t") :]
    assert "Index Cond: ((status = s.status) AND (ROW(updated_at, id) >" in finding, plan
    deleting = plan[plan.index("Delete on timers d") :]
    assert "on timers_pkey" in deleting and "Index Cond: (id = ANY" in deleting, plan
    assert "Seq Scan" not in plan, plan
