"""page (only when named: `--only page`; it fills millions of rows first): a fresh database (bench_ops_page) holding `--page-rows` (10,000,000) timers, made by
server-side SQL (`INSERT … SELECT … FROM generate_series`, 1,000,000 rows a statement, two at a
time) at migration 0007, then migrated to head (0008 builds its indexes and 0009 the labels of
the filled table, as they would on a user's) and `VACUUM ANALYZE`d. The rows: created evenly over
the last 7 days (ids are UUIDv7 of that time); about 90 % completed, 5 % failed, 3 % canceled, the
rest pending (those whose `execute_at` is still ahead, and 2 % due 1 to 30 days ahead);
`execute_at` minutes to two hours after creation; 10 % `nats`, the others `http`; metadata
`{"tenant": "t<0..999>"}` on each; one attempt in the history of each finished one. Then the real
API (`timers api`, default settings but LOG_LEVEL=WARNING, on 127.0.0.1) answers `GET /timers?limit=50` over HTTP with the
API key, after five warm-up requests: for each case (created_at desc, the default; execute_at
asc; status=completed; metadata={"tenant":"t42"}; callback_type=nats) and each depth (the first
page, 1k, 100k, 1M and 5M rows in, and the end of the list; each only where the list is that
long), `--page-reps` (100) consecutive pages from that depth, each timed by the client around the
whole request (server, loopback and reading the body). A depth is reached with a cursor made as
the API makes them (`timers.api.pages.encode`) from the row just before it, read by one untimed
SQL query; the first row of the page is checked against the row at that offset (`ok`). For
comparison, `offset=100000` and `offset=1000000` (the API's maximum), `--page-offset-reps` (10)
times each, and the first page with `limit=1` (what a request costs besides its rows). The plan of
the store's own statement at the deepest page of each case (EXPLAIN ANALYZE, BUFFERS) goes into
the JSON, and is printed for a case that misses the target while its statement takes more than
5 ms. Target: every cursor page <= 20 ms at p50. Last, what the labels cost a write: batches of
`create_many` with metadata, the label triggers on and off by turns (`measure_create_cost`).
`--page-keep` keeps the database and reuses it on the next run when it holds as many rows
(otherwise it is dropped at the end).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from sqlalchemy import event, text

from bench.harness import API_KEY, Bench, database_exists, drop_database, say, start_api
from bench.workloads.filling import Mix, filled_database
from bench.workloads.page_report import (
    CREATE_BATCH,
    CREATE_BATCHES,
    PageReport,
    PageRow,
    timings,
)
from timers.api import pages
from timers.migrations import upgrade
from timers.models import TimerStatus
from timers.storage import NewTimer, TimerFilter
from timers.store import TimerStore, database_engine

PAGE_DB = "bench_ops_page"
LIMIT = 50


@dataclass
class PageCase:
    name: str
    params: dict[str, str]  # query parameters besides limit and cursor
    sort: str
    order: str
    where: TimerFilter
    sql: str  # the same condition in SQL, for the untimed positioning queries


CASES = (
    PageCase("created_at desc", {}, "created_at", "desc", TimerFilter(), "true"),
    PageCase(
        "execute_at asc",
        {"sort": "execute_at", "order": "asc"},
        "execute_at",
        "asc",
        TimerFilter(),
        "true",
    ),
    PageCase(
        "status=completed",
        {"status": "completed"},
        "created_at",
        "desc",
        TimerFilter(status=TimerStatus.COMPLETED),
        "status = 'completed'",
    ),
    PageCase(
        'metadata={"tenant":"t42"}',
        {"metadata": '{"tenant":"t42"}'},
        "created_at",
        "desc",
        TimerFilter(metadata={"tenant": "t42"}),
        """metadata @> '{"tenant": "t42"}'""",
    ),
    PageCase(
        "callback_type=nats",
        {"callback_type": "nats"},
        "created_at",
        "desc",
        TimerFilter(callback_type="nats"),
        "callback_type = 'nats'",
    ),
)
DEPTHS = (0, 1_000, 100_000, 1_000_000, 5_000_000)
OFFSETS = (100_000, 1_000_000)


@contextmanager
def captured_sql(store: TimerStore) -> Iterator[list[tuple[str, Any]]]:
    """The statements (and their parameters) that `store` sends meanwhile."""
    seen: list[tuple[str, Any]] = []

    def listen(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", listen)


def explain_page(store: TimerStore, case: PageCase, after: pages.PagePosition | None) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement TimerStore.page sends for this case."""
    with captured_sql(store) as seen:
        store.page(
            where=case.where,
            limit=LIMIT,
            sort=case.sort,
            order=case.order,
            after=after,
            with_total=False,
        )
    statement, params = seen[-1]
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
        plan = [r[0] for r in cur.fetchall()]
        cur.close()
    finally:
        raw.close()
    return plan


def fill_page_database(
    bench: Bench, rows: int, keep: bool
) -> tuple[str, float | None, dict[str, float]]:
    """The page workload's database: reused when kept from an earlier run with as many rows,
    else made afresh. Returns its URL, the fill time (None when reused) and the fill's parts."""
    url = bench.services.database_url(PAGE_DB)
    marker = f"bench page fill: {rows} rows"
    if keep and database_exists(bench, PAGE_DB):
        engine = database_engine(url)
        try:
            with engine.begin() as conn:
                comment = conn.execute(
                    text("SELECT obj_description('timers'::regclass, 'pg_class')")
                ).scalar()
                head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                if comment == marker:  # a run killed while it measured the labels' cost
                    conn.execute(text("ALTER TABLE timers ENABLE TRIGGER USER"))  # left them off
        finally:
            engine.dispose()
        if comment == marker:
            upgrade(url)  # a no-op at head; migrates the kept rows if the schema moved on
            say(f"page: reusing the kept {PAGE_DB} ({rows:,} rows, revision {head})")
            return url, None, {}
        say(f"page: {PAGE_DB} holds something else ({comment!r}); filling it afresh")
    began = time.monotonic()
    now = datetime.now(UTC)
    mix = Mix(canceled=0.03, failed=0.05, far=0.98, nats=0.10)
    url, parts = filled_database(bench, PAGE_DB, [(rows, now - timedelta(days=7), now, mix)])
    engine = database_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f"COMMENT ON TABLE timers IS '{marker}'"))
    finally:
        engine.dispose()
    return url, time.monotonic() - began, parts


def position_at(store: TimerStore, case: PageCase, offset: int) -> tuple[Any, uuid.UUID] | None:
    """(sort value, id) of the row at `offset` in this case's list (untimed, one query)."""
    direction = "DESC" if case.order == "desc" else "ASC"
    query = text(
        f"SELECT {case.sort} AS value, id FROM timers WHERE {case.sql} "  # noqa: S608 - ours
        f"ORDER BY {case.sort} {direction}, id {direction} OFFSET :offset LIMIT 1"
    )
    with store.engine.connect() as conn:
        row = conn.execute(query, {"offset": offset}).first()
    return None if row is None else (row.value, row.id)


def timed_get(session: requests.Session, url: str, params: dict[str, Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    response = session.get(url, params=params, timeout=120)
    _ = response.content
    took = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} {params}: {response.status_code} {response.text[:300]}")
    return took, response.json()["data"]


def measure_depth(
    session: requests.Session,
    base: str,
    store: TimerStore,
    case: PageCase,
    matching: int,
    depth: int,
    label: str,
    reps: int,
    limit: int = LIMIT,
) -> tuple[PageRow, pages.PagePosition | None]:
    """`reps` consecutive pages of `limit` rows from `depth` (a cursor from the row before it),
    each timed."""
    after = None
    if depth:
        found = position_at(store, case, depth - 1)
        assert found is not None, (case.name, depth)
        after = found
    expected = position_at(store, case, depth)
    params: dict[str, Any] = {"limit": limit, **case.params}
    if after is not None:
        params["cursor"] = pages.encode(after, case.sort, case.order)
    times = []
    ok = True
    note = ""
    for i in range(reps):
        took, data = timed_get(session, f"{base}/timers", params)
        times.append(took)
        got = data["timers"]
        if i == 0 and (not got or expected is None or got[0]["id"] != str(expected[1])):
            ok = False
            note = f"first row {got[0]['id'] if got else None}, expected {expected}"
        if len(got) != limit and data.get("next_cursor") is not None:
            ok = False
            note = f"a page of {len(got)} rows with a next cursor"
        if data.get("next_cursor") is None:
            if i != reps - 1:
                note = f"the list ended after {i + 1} pages"
            break
        params["cursor"] = data["next_cursor"]
    row = PageRow(
        case=case.name,
        matching=matching,
        depth=depth,
        label=label,
        **timings(times),
        rows_ok=ok,
        note=note,
    )
    return row, after


def measure_create_cost(store: TimerStore) -> dict[str, list[float]]:
    """Microseconds per timer of `create_many` batches of CREATE_BATCH timers with metadata of
    two labels (`{"tenant": ..., "order": ...}`), the label triggers on and off by turns (ALTER
    TABLE between batches, untimed), on the filled table; the timers are deleted afterwards."""
    times: dict[str, list[float]] = {"labels": [], "no labels": []}
    made: list[uuid.UUID] = []
    due = datetime.now(UTC) + timedelta(days=60)

    def triggers(on: bool) -> None:
        verb = "ENABLE" if on else "DISABLE"
        with store.engine.begin() as conn:
            for name in ("timers_label_insert", "timers_unlabel"):
                conn.execute(text(f"ALTER TABLE timers {verb} TRIGGER {name}"))

    try:
        for i in range(2 * CREATE_BATCHES):
            on = i % 2 == 0
            triggers(on)
            batch = [
                NewTimer(
                    due,
                    "http",
                    {"type": "http", "url": "https://hooks.example.com/created"},
                    metadata={"tenant": f"t{j % 1000}", "order": f"o{i}-{j}"},
                )
                for j in range(CREATE_BATCH)
            ]
            began = time.perf_counter()
            made += [t.id for t in store.create_many(batch)]
            took = time.perf_counter() - began
            times["labels" if on else "no labels"].append(took / CREATE_BATCH * 1e6)
    finally:
        triggers(True)
        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM timers WHERE id = ANY(:ids)"), {"ids": made})
    return times


def run_page(bench: Bench, rows: int, reps: int, offset_reps: int, keep: bool) -> PageReport:
    began = time.monotonic()
    url, fill_s, parts = fill_page_database(bench, rows, keep)
    report = PageReport(rows=rows, fill_s=fill_s, fill_parts=parts, kept=keep)
    store = TimerStore(database_engine(url))
    try:
        with store.engine.connect() as conn:
            report.table_mb = float(
                conn.execute(text("SELECT pg_table_size('timers') / 1048576.0")).scalar_one()
            )
            report.indexes_mb = {
                r.name: float(r.mb)
                for r in conn.execute(
                    text(
                        "SELECT indexrelid::regclass::text AS name, "
                        "pg_relation_size(indexrelid) / 1048576.0 AS mb "
                        "FROM pg_index WHERE indrelid = 'timers'::regclass ORDER BY 1"
                    )
                )
            }
            report.labels_mb = float(
                conn.execute(
                    text("SELECT pg_total_relation_size('timer_labels') / 1048576.0")
                ).scalar_one()
            )
            report.statuses = {
                r.status: int(r.n)
                for r in conn.execute(
                    text("SELECT status, count(*) AS n FROM timers GROUP BY 1 ORDER BY 1")
                )
            }
        base = start_api(bench, url, "api-page")
        session = requests.Session()
        session.headers["X-API-Key"] = API_KEY
        for _ in range(5):  # the API's pool connects on its first requests
            timed_get(session, f"{base}/timers", {"limit": 1})
        for case in CASES:
            with store.engine.connect() as conn:
                matching = int(
                    conn.execute(text(f"SELECT count(*) FROM timers WHERE {case.sql}")).scalar_one()  # noqa: S608
                )
            end = max(0, matching - reps * LIMIT)
            depths = [(d, f"{d:,}" if d else "first") for d in DEPTHS if d < end]
            depths.append((end, f"end ({end:,})" if end else "first"))
            deepest: pages.PagePosition | None = None
            for depth, label in depths:
                say(f"page: {case.name} at {label} …")
                row, after = measure_depth(session, base, store, case, matching, depth, label, reps)
                report.pages.append(row)
                deepest = after
            report.plans[case.name] = explain_page(store, case, deepest)
        default = CASES[0]
        say("page: limit=1 …")
        row, _ = measure_depth(session, base, store, default, rows, 0, "first", reps, limit=1)
        row.case = f"{default.name}, limit=1"
        report.controls.append(row)
        for offset in OFFSETS:
            if offset >= rows:
                continue
            say(f"page: offset={offset:,} …")
            times = []
            for _ in range(offset_reps):
                took, data = timed_get(
                    session, f"{base}/timers", {"limit": LIMIT, "offset": offset}
                )
                times.append(took)
            expected = position_at(store, default, offset)
            ok = (
                bool(data["timers"])
                and expected is not None
                and data["timers"][0]["id"] == str(expected[1])
            )
            report.offsets.append(
                PageRow(
                    case=f"offset ({default.name})",
                    matching=rows,
                    depth=offset,
                    label=f"offset={offset:,}",
                    **timings(times),
                    rows_ok=ok,
                )
            )
        bench.stop_all()
        say("page: the cost of labels on create …")
        report.create_us = measure_create_cost(store)
    finally:
        bench.stop_all()
        store.engine.dispose()
        if not keep:
            drop_database(bench, PAGE_DB)
    report.total_s = time.monotonic() - began
    return report
