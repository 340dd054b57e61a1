"""Operating at scale: two workloads that `make bench` runs only when named (`--only page`,
`--only retention`): each fills millions of rows first, and together they take longer than the
rest of the run.

page: a fresh database (bench_ops_page) holding `--page-rows` (10,000,000) timers, made by
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

retention: live load (`--retention-rate`, 500 timers/s, coming due; each batch of a tenth of a
second created by one INSERT … SELECT, LEAD seconds before it is due; the shipped scheduler and
worker; arrivals at the bench's receiver) on a database that also holds `--retention-rows`
(5,000,000) completed timers that finished 8 to 15 days ago, and one pending timer due in 1 to 30
days per 100 of them (a live table has some: statistics that show none make the scheduler's
claims plan for none). Two runs, each on a fresh copy of the same filled database (`CREATE
DATABASE … TEMPLATE`): first purge, TIMERS_RETENTION unset (7 days), so the scheduler deletes
those rows while the load runs (its first pass starts 10 s after it starts), the load running
until the scheduler logs `retention: deleted` (at least `--retention-min-seconds`, at most
`--retention-max-seconds`); then baseline, TIMERS_RETENTION=0 (off), the load for the same time.
Lateness is arrival minus `execute_at`, over every timer created. Reported: both rows, the ratio
of their p99s (target purge/baseline <= 1.20), the rows deleted, how long the purge took, its
progress, the lateness of the timers due while it ran, and the most timers seen executing at once
(the worker's backlog, counted up to 50,000).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import redis
import requests
from sqlalchemy import event, text

from timers.api import pages
from timers.migrations import upgrade
from timers.models import TimerStatus
from timers.scheduler.retention import FIRST_PASS_AFTER
from timers.storage import NewTimer, TimerFilter
from timers.store import TimerStore, database_engine

if TYPE_CHECKING:
    from bench.__main__ import Bench, Cell


def core() -> ModuleType:
    """bench/__main__.py as it runs: `python -m bench` runs it as `__main__`, and importing
    `bench.__main__` then would load a second copy."""
    running = sys.modules.get("__main__")
    spec = getattr(running, "__spec__", None)
    if running is not None and spec is not None and spec.name == "bench.__main__":
        return running
    import bench.__main__

    return bench.__main__


PAGE_DB = "bench_ops_page"
RETENTION_TEMPLATE = "bench_ops_retention_template"
LIMIT = 50
TARGET_PAGE_MS = 20.0
SLOW_SQL_MS = 5.0  # a page whose statement takes longer prints its plan
TARGET_RATIO = 1.20
RATE = 500  # timers coming due per second in the retention workload
PENDING_SHARE = 100  # retention: one pending timer (due in 1 to 30 days) per 100 finished ones
LEAD = 5.0  # seconds between a timer's creation and its execute_at
CHUNK = 1_000_000  # rows per INSERT … SELECT
FILLERS = 2  # INSERT … SELECT statements at a time


# -- filling -----------------------------------------------------------------------------------

# One statement fills rows lo..hi of a table of `n`: created_at evenly from :t0 on, every :step
# seconds (row i at t0 + i * step), so ids (UUIDv7 of created_at) and created_at grow together.
# r1 picks the status (canceled below :canceled, failed below :canceled + :failed, pending from
# :far on, due 1 to 30 days ahead; a row whose execute_at is still ahead is pending too), r2 the
# delay from creation to execute_at (r2² × 2 h), r3 when a canceled one was canceled, r4 the kind.
FILL = text(
    """
    INSERT INTO timers (id, created_at, updated_at, execute_at, executed_at, started_at,
                        claimed_at, callback_type, callback_config, status, last_error, metadata,
                        attempts, delivery_attempts, history)
    SELECT
        (lpad(to_hex(ms), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
        created_at,
        CASE status
            WHEN 'pending' THEN created_at
            WHEN 'canceled' THEN created_at + (execute_at - created_at) * r3
            ELSE execute_at + interval '60 milliseconds'
        END,
        execute_at,
        CASE WHEN finished THEN execute_at + interval '60 milliseconds' END,
        CASE WHEN finished THEN execute_at + interval '10 milliseconds' END,
        CASE WHEN finished THEN execute_at END,
        kind,
        CAST(CASE kind
            WHEN 'nats' THEN '{"type":"nats","subject":"orders.expired","payload":{"order":' || i
                             || '}}'
            ELSE '{"type":"http","url":"https://hooks.example.com/t' || tenant
                 || '/expired","payload":{"order":' || i || '}}'
        END AS jsonb),
        status,
        CASE WHEN status = 'failed' THEN 'HTTP 500' END,
        CAST('{"tenant":"t' || tenant || '"}' AS jsonb),
        CASE WHEN finished THEN 1 ELSE 0 END,
        CASE WHEN finished THEN 1 ELSE 0 END,
        CASE status
            WHEN 'completed' THEN jsonb_set(CAST(:completed_history AS jsonb),
                '{0,started_at}', to_jsonb(execute_at + interval '10 milliseconds'))
            WHEN 'failed' THEN jsonb_set(CAST(:failed_history AS jsonb),
                '{0,started_at}', to_jsonb(execute_at + interval '10 milliseconds'))
            ELSE '[]'
        END
    FROM (
        SELECT *, status IN ('completed', 'failed') AS finished FROM (
            SELECT *,
                CASE
                    WHEN r1 < :canceled THEN 'canceled'
                    WHEN r1 >= :far OR execute_at > now() THEN 'pending'
                    WHEN r1 < :canceled + :failed THEN 'failed'
                    ELSE 'completed'
                END AS status
            FROM (
                SELECT *,
                    CASE WHEN r1 >= :far THEN now() + interval '1 day' + r2 * interval '29 days'
                         ELSE created_at + r2 * r2 * interval '2 hours' END AS execute_at,
                    CASE WHEN r4 < :nats THEN 'nats' ELSE 'http' END AS kind
                FROM (
                    SELECT i, to_timestamp(s) AS created_at, (s * 1000)::bigint AS ms,
                           random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                           floor(random() * 1000)::int AS tenant, md5(random()::text) AS h
                    FROM (
                        SELECT i, CAST(:t0 AS float8) + i * CAST(:step AS float8) AS s
                        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g(i)
                    ) g
                    OFFSET 0  -- a fence: the columns above are computed once
                ) a
                OFFSET 0
            ) b
            OFFSET 0
        ) c
        OFFSET 0
    ) d
    """
)


# The history of a finished timer: one attempt (its started_at set per row).
HISTORY = {
    outcome: json.dumps(
        [
            {
                "attempt": 1,
                "started_at": "",
                "duration_ms": 50,
                "outcome": outcome,
                "status": status,
                "error": error,
            }
        ]
    )
    for outcome, status, error in (("completed", 200, None), ("failed", 500, "HTTP 500"))
}


@dataclass
class Mix:
    canceled: float = 0.0
    failed: float = 0.0
    far: float = 1.0  # r1 from here on: pending, due 1 to 30 days ahead (1.0: none)
    nats: float = 0.0


def fill(url: str, rows: int, start: datetime, end: datetime, mix: Mix) -> None:
    """`rows` timers created evenly from `start` to `end`, CHUNK rows a statement, FILLERS
    statements at a time (the change trigger off meanwhile: no notifications for the pending
    ones)."""
    engine = database_engine(url, pool_size=FILLERS)
    step = (end - start).total_seconds() / rows
    chunks = [(lo, min(rows, lo + CHUNK) - 1) for lo in range(0, rows, CHUNK)]

    def one(chunk: tuple[int, int]) -> None:
        began = time.monotonic()
        params = {
            "lo": chunk[0],
            "hi": chunk[1],
            "t0": start.timestamp(),
            "step": step,
            "completed_history": HISTORY["completed"],
            "failed_history": HISTORY["failed"],
            **asdict(mix),
        }
        with engine.begin() as conn:
            conn.execute(FILL, params)
        say(f"  rows {chunk[0]:,}..{chunk[1]:,} in {time.monotonic() - began:.0f}s")

    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE timers DISABLE TRIGGER timers_notify_change"))
        with ThreadPoolExecutor(FILLERS) as pool:
            list(pool.map(one, chunks))
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE timers ENABLE TRIGGER timers_notify_change"))
    finally:
        engine.dispose()


def vacuum_analyze(url: str) -> None:
    engine = database_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE timers"))
    finally:
        engine.dispose()


Fill = tuple[int, datetime, datetime, Mix]  # rows, created from, created until, their mix


def filled_database(bench: Bench, name: str, fills: list[Fill]) -> tuple[str, dict[str, float]]:
    """A fresh database `name` holding the timers of `fills`: created at migration 0007, filled,
    then migrated to head (0008 builds its indexes and 0009 the labels of the filled table, as on
    a user's) and VACUUM ANALYZEd. Returns its URL and the seconds each step took."""
    drop_database(bench, name)
    bench.services.admin_execute(f'CREATE DATABASE "{name}"')
    url = bench.services.database_url(name)
    parts: dict[str, float] = {}
    upgrade(url, "0007")
    say(f"{name}: inserting {sum(f[0] for f in fills):,} rows …")
    t = time.monotonic()
    for rows, start, end, mix in fills:
        fill(url, rows, start, end, mix)
    parts["insert_s"] = time.monotonic() - t
    say(f"{name}: migrating to head (0008 builds its indexes, 0009 the labels) …")
    t = time.monotonic()
    upgrade(url)
    parts["migrate_s"] = time.monotonic() - t
    say(f"{name}: VACUUM ANALYZE …")
    t = time.monotonic()
    vacuum_analyze(url)
    parts["vacuum_analyze_s"] = time.monotonic() - t
    return url, parts


def database_exists(bench: Bench, name: str) -> bool:
    engine = database_engine(bench.services.postgres_url)
    try:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).first()
            )
    finally:
        engine.dispose()


def drop_database(bench: Bench, name: str) -> None:
    bench.services.admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- page --------------------------------------------------------------------------------------


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


@dataclass
class PageRow:
    case: str
    matching: int
    depth: int
    label: str
    requests: int
    first_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    rows_ok: bool  # every page had LIMIT rows (or the list's last ones) in the expected place
    note: str = ""


@dataclass
class PageReport:
    rows: int
    fill_s: float | None  # None: the kept database was reused
    fill_parts: dict[str, float] = field(default_factory=dict)
    table_mb: float = 0.0
    indexes_mb: dict[str, float] = field(default_factory=dict)
    pages: list[PageRow] = field(default_factory=list)
    offsets: list[PageRow] = field(default_factory=list)
    # The same API with one row a page (first page, created_at desc): what a request costs
    # besides its rows.
    controls: list[PageRow] = field(default_factory=list)
    plans: dict[str, list[str]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    labels_mb: float = 0.0  # timer_labels with its index
    # Microseconds per timer made by TimerStore.create_many with metadata, by whether the label
    # triggers were on: what keeping the labels costs a write.
    create_us: dict[str, list[float]] = field(default_factory=dict)
    total_s: float = 0.0
    kept: bool = False


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


def plan_summary(plan: list[str]) -> str:
    """The scan nodes (index or not) and the execution time of a plan."""
    scans = []
    for line in plan:
        m = re.search(
            r"((?:Parallel )?(?:Index Only Scan|Index Scan|Bitmap Index Scan|Bitmap Heap "
            r"Scan|Seq Scan)(?: Backward)?(?: using \S+)?(?: on \S+)?)",
            line,
        )
        if m and "Bitmap Heap" not in m.group(1):
            scans.append(m.group(1).replace(" on timers", ""))
    ms = next((line.split(":")[1].strip() for line in plan if "Execution Time" in line), "?")
    sort = (
        " + Sort"
        if any(line.strip().startswith("->  Sort") or "Sort Method" in line for line in plan)
        else ""
    )
    return f"{'; '.join(scans) or '?'}{sort}; {ms}"


def plan_ms(plan: list[str]) -> float:
    """A plan's execution time, ms (NaN when it has none)."""
    for line in plan:
        if "Execution Time" in line:
            return float(line.split(":")[1].split()[0])
    return math.nan


def timings(times: list[float]) -> dict[str, Any]:
    """A PageRow's timing fields from the request times of one case, in order."""
    return {
        "requests": len(times),
        "first_ms": times[0],
        "p50_ms": percentile(times, 0.5),
        "p99_ms": percentile(times, 0.99),
        "max_ms": max(times),
    }


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


CREATE_BATCHES = 40  # of each kind, alternating
CREATE_BATCH = 100


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
        base = core().start_api(bench, url, "api-page")
        session = requests.Session()
        session.headers["X-API-Key"] = core().API_KEY
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


def page_table(report: PageReport) -> str:
    lines = []
    if report.fill_s is None:
        lines.append(f"page: {report.rows:,} rows (the kept database, reused)")
    else:
        parts = ", ".join(f"{k.removesuffix('_s')} {v:.0f}s" for k, v in report.fill_parts.items())
        lines.append(f"page: {report.rows:,} rows filled in {report.fill_s:.0f}s ({parts})")
    lines.append(
        f"  table {report.table_mb:,.0f} MB; by status "
        + ", ".join(f"{k} {v:,}" for k, v in report.statuses.items())
    )
    lines.append(
        "  indexes MB: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in report.indexes_mb.items())
        + f"; timer_labels with its index {report.labels_mb:,.0f}"
    )
    header = (
        f"{'case':<27}{'matching':>11}{'from row':>18}{'pages':>6}{'first ms':>9}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}  ok"
    )
    lines += ["", header, "-" * len(header)]
    for r in report.pages + report.offsets + report.controls:
        lines.append(
            f"{r.case:<27}{r.matching:>11,}{r.label:>18}{r.requests:>6}{r.first_ms:>9.1f}"
            f"{r.p50_ms:>8.1f}{r.p99_ms:>8.1f}{r.max_ms:>8.1f}  {'yes' if r.rows_ok else 'NO'}"
            + (f"  ({r.note})" if r.note else "")
        )
    lines.append("")
    for name, plan in report.plans.items():
        lines.append(f"plan at the deepest page, {name}: {plan_summary(plan)}")
    worst = max(report.pages, key=lambda r: r.p50_ms)
    met = all(r.p50_ms <= TARGET_PAGE_MS for r in report.pages)
    lines.append(
        f"target every cursor page p50 <= {TARGET_PAGE_MS:.0f} ms: {'met' if met else 'MISSED'} "
        f"(worst p50 {worst.p50_ms:.1f} ms: {worst.case} from {worst.label}; worst p99 "
        f"{max(r.p99_ms for r in report.pages):.1f} ms)"
    )
    missed = {r.case for r in report.pages if r.p50_ms > TARGET_PAGE_MS}
    slow = sorted(n for n in missed if plan_ms(report.plans.get(n, [])) > SLOW_SQL_MS)
    fast = sorted(missed - set(slow))
    if fast:
        control = report.controls[0].p50_ms if report.controls else math.nan
        lines.append(
            f"missed with under {SLOW_SQL_MS:.0f} ms in PostgreSQL ({', '.join(fast)}): the rest "
            f"is the API's (one row a page: p50 {control:.1f} ms)"
        )
    for name in slow:
        lines.append(f"EXPLAIN (ANALYZE, BUFFERS) at the deepest page, {name}:")
        lines.extend("    " + line for line in report.plans.get(name, []))
    if report.create_us:
        with_labels, without = (
            percentile(report.create_us[k], 0.5) for k in ("labels", "no labels")
        )
        lines.append(
            f"create_many with metadata of two labels, {CREATE_BATCHES} batches of "
            f"{CREATE_BATCH} each way, on the filled table: p50 {with_labels:.0f} us a timer "
            f"with the label triggers, {without:.0f} us without ({with_labels / without:.2f}x)"
        )
    lines.append(f"(page workload {report.total_s:.0f}s)")
    return "\n".join(lines)


# -- retention ---------------------------------------------------------------------------------


@dataclass
class Purge:
    """What the scheduler's retention did during a run (from its log and PostgreSQL's counters)."""

    deleted: int | None = None  # from its `retention: deleted` line
    started_at: float | None = None  # unix time: the scheduler's start + FIRST_PASS_AFTER
    finished_at: float | None = None  # unix time of that line
    old_rows_left: int | None = None  # finished rows older than 7 days after the run
    progress: list[tuple[float, int]] = field(default_factory=list)  # (s into the run, deleted)

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass
class RetentionReport:
    rows: int
    pending: int  # pending timers due over the next 30 days, beside the `rows` finished ones
    rate: int  # timers coming due per second
    fill_s: float = 0.0
    fill_parts: dict[str, float] = field(default_factory=dict)
    copy_s: list[float] = field(default_factory=list)  # CREATE DATABASE … TEMPLATE, each run
    seconds: float = 0.0  # how long each run's load ran
    cells: list[Cell] = field(default_factory=list)  # purge, baseline
    purge: Purge = field(default_factory=Purge)
    baseline_old_rows_left: int | None = None
    during_purge: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0

    def ratio(self) -> float | None:
        cells = {c.variant: c for c in self.cells}
        on, off = cells.get("purge"), cells.get("baseline")
        if on is None or off is None or off.p99_ms <= 0:
            return None
        return on.p99_ms / off.p99_ms


# One batch of the live load: timers lo..hi of the run, timer n due at t0 + n / rate, with
# UUIDv7 ids of the statement's time (as the API makes them: the primary key grows at its end).
LIVE = text(
    """
    INSERT INTO timers (id, execute_at, callback_type, callback_config, status)
    SELECT (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || '7'
            || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
           to_timestamp(CAST(:t0 AS float8) + n / CAST(:rate AS float8)),
           'http', CAST(:config AS jsonb), 'pending'
    FROM (
        SELECT n, md5(random()::text) AS h
        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g(n)
        OFFSET 0
    ) s
    """
)
OLD_ROWS = text(
    "SELECT count(*) FROM timers "
    "WHERE status = 'completed' AND updated_at < now() - interval '7 days'"
)
DELETED = text("SELECT n_tup_del FROM pg_stat_user_tables WHERE relname = 'timers'")
# Claimed and not finished yet: the worker's backlog (on the partial index of executing timers),
# counted up to EXECUTING_CAP (a count of a pile of hundreds of thousands would load the database).
EXECUTING_CAP = 50_000
EXECUTING = text(
    "SELECT count(*) FROM (SELECT 1 FROM timers WHERE status = 'executing' LIMIT :cap) AS t"
)
PURGED = re.compile(r"retention: deleted (\d+) finished timers")


class LogTail:
    """The lines a process appends to its log, read from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        complete, _, self.partial = data.rpartition(b"\n")
        return complete.decode(errors="replace").splitlines() if complete else []


def log_time(line: str) -> float | None:
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
    except ValueError:
        return None


def copy_database(bench: Bench, template: str, name: str) -> tuple[str, float]:
    """A copy of `template` (file by file: it is not written to the WAL)."""
    began = time.monotonic()
    drop_database(bench, name)
    bench.services.admin_execute(
        f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY'
    )
    return bench.services.database_url(name), time.monotonic() - began


def steady_live(
    bench: Bench,
    url: str,
    variant: str,
    retention: str | None,
    *,
    seconds: float | None,
    min_seconds: float,
    max_seconds: float,
    rate: int = RATE,
) -> tuple[Cell, Purge, float, dict[str, float]]:
    """`rate` timers/s coming due, each created LEAD s before (a batch every 0.1 s), with the
    shipped worker and scheduler (TIMERS_RETENTION `retention`; None: unset, the default). Runs
    `seconds`, or (None) until the scheduler logs its first retention pass, at least
    `min_seconds` and at most `max_seconds`. Returns the cell, what retention did, and how long
    the load ran, and the lateness of the timers due while the purge ran."""
    main = core()

    tag = f"timers-retention-{variant}"
    db_name = url.rsplit("/", 1)[1].split("?")[0]
    cell = main.Cell("timers", "retention", variant=variant)
    receiver = bench.receiver(tag)
    redis.Redis.from_url(bench.broker).flushdb()
    store = TimerStore(database_engine(url))
    env: dict[str, str | None] = {**bench.env(url, "timers"), "TIMERS_RETENTION": retention}
    due: dict[str, float] = {}
    purge = Purge()
    config = main.callback_config(receiver.url)
    ran = 0.0
    gave_up_at = time.time()
    try:
        worker = bench.start_worker("timers", env, tag)
        scheduler = bench.start_scheduler(env, tag)
        tail = LogTail(bench.workdir / f"scheduler-{tag}.log")
        for line in tail.lines():
            if "scheduler started" in line and (at := log_time(line)) is not None:
                purge.started_at = at + FIRST_PASS_AFTER
        with store.engine.connect() as conn:
            deleted_before = int(conn.execute(DELETED).scalar() or 0)
        before = main.xacts(store, db_name)
        worker_cpu = main.tree_cpu(worker)
        start = time.monotonic()
        start_wall = time.time()
        created = 0
        lag = 0.0  # how far behind its plan the creation of a batch started, at most
        backlog = executing = 0  # timers executing (claimed, not finished): most seen, last seen
        next_poll = start
        while True:
            now = time.monotonic()
            ran = now - start
            if seconds is not None:
                if ran >= seconds:
                    break
            elif (purge.finished_at is not None and ran >= min_seconds) or ran >= max_seconds:
                break
            wanted = int(rate * ran)
            if wanted > created:
                lag = max(lag, time.time() - (start_wall + created / rate))
                with store.engine.connect() as conn:
                    conn.execute(
                        LIVE,
                        {
                            "lo": created,
                            "hi": wanted - 1,
                            "t0": start_wall + LEAD,
                            "rate": rate,
                            "config": json.dumps(config),
                        },
                    )
                created = wanted
            if now >= next_poll:
                next_poll = now + 2.0
                with store.engine.connect() as conn:
                    deleted = int(conn.execute(DELETED).scalar() or 0) - deleted_before
                    executing = int(
                        conn.execute(EXECUTING, {"cap": EXECUTING_CAP + 1}).scalar_one()
                    )
                backlog = max(backlog, executing)
                if not purge.progress or purge.progress[-1][1] != deleted:
                    purge.progress.append((round(ran, 1), deleted))
                for line in tail.lines():
                    found = PURGED.search(line)
                    if found and purge.finished_at is None:
                        purge.deleted = int(found.group(1))
                        purge.finished_at = log_time(line)
            time.sleep(max(0.0, start + (created + rate / 10) / rate - time.monotonic()))
        with store.engine.connect() as conn:
            due = {
                str(r.id): float(r.at)
                for r in conn.execute(
                    text(
                        "SELECT id, extract(epoch FROM execute_at) AS at FROM timers "
                        "WHERE created_at >= to_timestamp(:since) - interval '1 second' "
                        "AND callback_config ->> 'url' = :url"
                    ),
                    {"since": start_wall, "url": receiver.url},
                )
            }
        last_due = max(due.values())
        deadline = time.monotonic() + max(0.0, last_due - time.time()) + 20.0
        while time.monotonic() < deadline and receiver.count() < len(due):
            time.sleep(0.25)
        gave_up_at = time.time()
        cell.worker_cpu_s = main.tree_cpu(worker) - worker_cpu
        cell.pg_statements_per_min = (main.xacts(store, db_name) - before) / (
            (time.monotonic() - start) / 60
        )
        main.scheduler_usage(cell, scheduler)
        if receiver.count() < len(due):
            cell.notes.append("stopped waiting 20s after the last due time; not arrived: never")
    finally:
        arrivals = receiver.collect()
        bench.stop_all()
    for line in LogTail(bench.workdir / f"scheduler-{tag}.log").lines():
        found = PURGED.search(line)
        if found and purge.finished_at is None:
            purge.deleted = int(found.group(1))
            purge.finished_at = log_time(line)
    try:
        with store.engine.connect() as conn:
            purge.old_rows_left = int(conn.execute(OLD_ROWS).scalar_one())
    finally:
        store.engine.dispose()
    main.summarize(cell, due, arrivals, gave_up_at)
    cell.notes.append(
        f"{rate} timers/s created live {LEAD:.0f}s before due for {ran:.0f}s (a batch started at "
        f"most {lag * 1000:.0f} ms behind its plan); "
        f"TIMERS_RETENTION {'unset (7d)' if retention is None else retention}"
    )

    def counted(n: int) -> str:
        return f"over {EXECUTING_CAP:,}" if n > EXECUTING_CAP else f"{n:,}"

    cell.notes.append(
        f"timers executing (claimed, not finished; polled every 2 s): at most {counted(backlog)}, "
        f"{counted(executing)} when the load stopped"
    )
    cell.notes.append("p99 ms by due time, per 30 s from the first: " + windows(due, arrivals))
    return cell, purge, ran, during(due, arrivals, gave_up_at, purge)


def windows(due: dict[str, float], arrivals: dict[str, list[float]], width: float = 30.0) -> str:
    """The p99 lateness of the timers due in each `width` seconds of the run (not arrived: inf)."""
    if not due:
        return "-"
    first = min(due.values())
    late: dict[int, list[float]] = {}
    for timer_id, at in due.items():
        got = arrivals.get(timer_id)
        late.setdefault(int((at - first) // width), []).append(
            (min(got) - at) * 1000 if got else math.inf
        )
    return " ".join(f"{percentile(late[k], 0.99):.0f}" for k in sorted(late))


def during(
    due: dict[str, float], arrivals: dict[str, list[float]], gave_up_at: float, purge: Purge
) -> dict[str, float]:
    """Lateness of the timers due while the purge ran (empty when it did not run or finish)."""
    if purge.started_at is None or purge.finished_at is None:
        return {}
    inside = {k: v for k, v in due.items() if purge.started_at <= v <= purge.finished_at}
    if not inside:
        return {}
    cell = core().summarize(core().Cell("timers", "retention"), inside, arrivals, gave_up_at)
    return {
        "timers": cell.timers,
        "p50_ms": cell.p50_ms,
        "p99_ms": cell.p99_ms,
        "max_ms": cell.max_ms,
    }


def run_retention(
    bench: Bench, rows: int, min_seconds: float, max_seconds: float, rate: int = RATE
) -> RetentionReport:
    began = time.monotonic()
    report = RetentionReport(rows=rows, pending=rows // PENDING_SHARE, rate=rate)
    now = datetime.now(UTC)
    on_db, off_db = "bench_ops_retention_purge", "bench_ops_retention_baseline"
    try:
        t = time.monotonic()
        start, end = now - timedelta(days=15), now - timedelta(days=8, hours=2)
        fills = [
            # Completed, each due within two hours of its creation: finished 8 to 15 days ago.
            (rows, start, end, Mix()),
            # And pending ones, due 1 to 30 days from now, as a live table has: without them the
            # statistics say no timer is pending, and the scheduler's claims plan for that.
            (report.pending, start, end, Mix(far=0.0)),
        ]
        _, report.fill_parts = filled_database(bench, RETENTION_TEMPLATE, fills)
        report.fill_s = time.monotonic() - t
        url, took = copy_database(bench, RETENTION_TEMPLATE, on_db)
        report.copy_s.append(took)
        say("retention: steady load while the scheduler purges …")
        cell, report.purge, report.seconds, report.during_purge = steady_live(
            bench,
            url,
            "purge",
            None,
            seconds=None,
            min_seconds=min_seconds,
            max_seconds=max_seconds,
            rate=rate,
        )
        report.cells.append(cell)
        drop_database(bench, on_db)
        url, took = copy_database(bench, RETENTION_TEMPLATE, off_db)
        report.copy_s.append(took)
        say(f"retention: the same load for {report.seconds:.0f}s with retention off …")
        cell, _, _, _ = steady_live(
            bench,
            url,
            "baseline",
            "0",
            seconds=report.seconds,
            min_seconds=0,
            max_seconds=report.seconds,
            rate=rate,
        )
        report.cells.append(cell)
        engine = database_engine(url)
        try:
            with engine.connect() as conn:
                report.baseline_old_rows_left = int(conn.execute(OLD_ROWS).scalar_one())
        finally:
            engine.dispose()
    finally:
        bench.stop_all()
        for name in (on_db, off_db, RETENTION_TEMPLATE):
            drop_database(bench, name)
    report.total_s = time.monotonic() - began
    return report


def retention_lines(report: RetentionReport) -> str:
    parts = ", ".join(f"{k.removesuffix('_s')} {v:.0f}s" for k, v in report.fill_parts.items())
    copies = " and ".join(f"{s:.0f}s" for s in report.copy_s)
    lines = [
        f"retention: {report.rows:,} completed timers that finished 8 to 15 days ago (and "
        f"{report.pending:,} pending ones due in 1 to 30 days), filled in {report.fill_s:.0f}s "
        f"({parts}); each run on a copy of them (CREATE DATABASE … TEMPLATE: {copies}); "
        f"{report.rate} timers/s for {report.seconds:.0f}s in each run"
    ]
    purge = report.purge
    if purge.seconds is not None and purge.deleted is not None:
        lines.append(
            f"retention purge: the scheduler deleted {purge.deleted:,} rows in "
            f"{purge.seconds:.0f}s ({purge.deleted / purge.seconds:,.0f} rows/s; from its first "
            f"pass, {FIRST_PASS_AFTER:.0f}s after it started, to its `retention: deleted` line); "
            f"old rows left after the run: {purge.old_rows_left:,}"
        )
    else:
        lines.append(
            f"retention purge: NOT finished within the run ({report.seconds:.0f}s); "
            f"old rows left: {purge.old_rows_left}"
        )
    if purge.progress:
        step = max(1, len(purge.progress) // 8)
        shown = purge.progress[::step]
        if shown[-1] != purge.progress[-1]:
            shown.append(purge.progress[-1])
        lines.append(
            "retention deleted so far (s into the run: rows, from pg_stat_user_tables): "
            + ", ".join(f"{s:.0f}: {n:,}" for s, n in shown)
        )
    if report.baseline_old_rows_left is not None:
        lines.append(f"retention baseline: {report.baseline_old_rows_left:,} old rows still there")
    if report.during_purge:
        d = report.during_purge
        lines.append(
            f"retention purge, timers due while it ran ({d['timers']:,.0f}): p50/p99/max "
            f"{d['p50_ms']:.0f}/{d['p99_ms']:.0f}/{d['max_ms']:.0f} ms"
        )
    ratio = report.ratio()
    cells = {c.variant: c for c in report.cells}
    if ratio is not None:
        on, off = cells["purge"], cells["baseline"]
        bound = "p99" in on.lower_bounds or "p99" in off.lower_bounds
        lines.append(
            f"retention p99 lateness purge/baseline: {ratio:.2f}x ({on.p99_ms:.0f} vs "
            f"{off.p99_ms:.0f} ms{', bounds' if bound else ''})"
        )
        met = ratio <= TARGET_RATIO and not bound and on.never == 0
        lines.append(
            f"target retention p99 with the purge within {TARGET_RATIO - 1:.0%} of the same "
            f"run without it: {'met' if met else 'MISSED'} ({ratio:.2f}x)"
        )
    lines.append(f"(retention workload {report.total_s:.0f}s)")
    return "\n".join(lines)
