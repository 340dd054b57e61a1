"""The page workload's results (bench.workloads.page) and their lines in the report."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from bench.cell import nearest_rank as percentile

TARGET_PAGE_MS = 20.0
SLOW_SQL_MS = 5.0  # a page whose statement takes longer prints its plan
CREATE_BATCHES = 40  # of each kind, alternating
CREATE_BATCH = 100


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
