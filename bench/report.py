"""The report: the table, the ratios against celery-eta, the targets, and the JSON of the run."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.cell import Cell
from bench.workloads.claim_path import ClaimPathReport
from bench.workloads.claim_size import ClaimSizeReport
from bench.workloads.page_report import PageReport
from bench.workloads.retention import RetentionReport


def ratios(cells: list[Cell]) -> list[dict[str, Any]]:
    """timers against celery-eta in this run: throughput for burst, p99 lateness for isolation,
    the caller's calls per second for celery-tasks, with the targets they are held to; and signed
    against unsigned (signing): p99 lateness and worker CPU."""
    by = {(c.workload, c.system): c for c in cells if c.variant is None}
    out: list[dict[str, Any]] = []
    burst_t, burst_e = by.get(("burst", "timers")), by.get(("burst", "celery-eta"))
    if burst_t and burst_e and burst_e.throughput > 0:
        ratio = burst_t.throughput / burst_e.throughput
        out.append(
            {
                "workload": "burst",
                "what": "throughput timers/celery-eta",
                "timers": burst_t.throughput,
                "celery_eta": burst_e.throughput,
                "ratio": ratio,
                "lower_bound": False,
                "text": (
                    f"burst throughput timers/celery-eta: {ratio:.2f}x "
                    f"({burst_t.throughput:.0f} vs {burst_e.throughput:.0f} cb/s)"
                ),
            }
        )
    iso_t, iso_e = by.get(("isolation", "timers")), by.get(("isolation", "celery-eta"))
    if iso_t and iso_e and iso_t.p99_ms > 0:
        ratio = iso_e.p99_ms / iso_t.p99_ms
        bound = "p99" in iso_e.lower_bounds and "p99" not in iso_t.lower_bounds
        gt = ">" if bound else ""
        out.append(
            {
                "workload": "isolation",
                "what": "p99 lateness celery-eta/timers",
                "timers": iso_t.p99_ms,
                "celery_eta": iso_e.p99_ms,
                "ratio": ratio,
                "lower_bound": bound,
                "text": (
                    f"isolation p99 lateness celery-eta/timers: {gt}{ratio:,.0f}x "
                    f"(timers {iso_t.p99_ms:.0f} ms vs celery-eta {gt}{iso_e.p99_ms:.0f} ms; "
                    f"timers/celery-eta {'<' if bound else ''}{1 / ratio:.4f})"
                ),
            }
        )
    fast_t, fast_e = by.get(("steady-2000", "timers")), by.get(("steady-2000", "celery-eta"))
    if fast_t and fast_e and fast_t.p99_ms > 0:
        ratio = fast_e.p99_ms / fast_t.p99_ms
        bound = "p99" in fast_e.lower_bounds and "p99" not in fast_t.lower_bounds
        # Both lower bounds: neither p99 is known, nor is their ratio.
        unknown = "p99" in fast_e.lower_bounds and "p99" in fast_t.lower_bounds
        gt = "?" if unknown else ">" if bound else ""
        out.append(
            {
                "workload": "steady-2000",
                "what": "p99 lateness celery-eta/timers",
                "timers": fast_t.p99_ms,
                "celery_eta": fast_e.p99_ms,
                "ratio": ratio,
                "lower_bound": bound,
                "unknown": unknown,
                "text": (
                    f"steady-2000 p99 lateness celery-eta/timers: {gt}{ratio:,.1f}x (timers "
                    f"{'>' if 'p99' in fast_t.lower_bounds else ''}{fast_t.p99_ms:.0f} ms at "
                    f"{fast_t.throughput:.0f} cb/s vs celery-eta "
                    f"{'>' if 'p99' in fast_e.lower_bounds else ''}{fast_e.p99_ms:.0f} ms at "
                    f"{fast_e.throughput:.0f} cb/s)"
                ),
            }
        )
    calls_t, calls_e = by.get(("celery-tasks", "timers")), by.get(("celery-tasks", "celery-eta"))
    if calls_t and calls_e and calls_t.calls_per_s and calls_e.calls_per_s:
        ratio = calls_t.calls_per_s / calls_e.calls_per_s
        out.append(
            {
                "workload": "celery-tasks",
                "what": "calls/s timers/celery-eta",
                "timers": calls_t.calls_per_s,
                "celery_eta": calls_e.calls_per_s,
                "ratio": ratio,
                "lower_bound": False,
                "text": (
                    f"celery-tasks calls/s ratio timers/celery-eta (durable_eta vs plain "
                    f"apply_async): {ratio:.2f} ({calls_t.calls_per_s:,.0f} vs "
                    f"{calls_e.calls_per_s:,.0f} calls/s)"
                ),
            }
        )
    variants = {(c.workload, c.system, c.variant): c for c in cells if c.variant is not None}
    off, on = variants.get(("signing", "timers", "off")), variants.get(("signing", "timers", "on"))
    if off and on and off.p99_ms > 0 and off.worker_cpu_s:
        p99 = on.p99_ms / off.p99_ms
        cpu = (on.worker_cpu_s or 0.0) / off.worker_cpu_s
        bound = "p99" in on.lower_bounds or "p99" in off.lower_bounds
        out.append(
            {
                "workload": "signing",
                "what": "signed/unsigned p99 lateness and worker CPU",
                "unsigned": {"p99_ms": off.p99_ms, "worker_cpu_s": off.worker_cpu_s},
                "signed": {"p99_ms": on.p99_ms, "worker_cpu_s": on.worker_cpu_s},
                "p99_ratio": p99,
                "cpu_ratio": cpu,
                "lower_bound": bound,
                "text": (
                    f"signing cost signed/unsigned: p99 lateness {p99:.2f}x "
                    f"({on.p99_ms:.0f} vs {off.p99_ms:.0f} ms{', bounds' if bound else ''}), "
                    f"worker CPU {cpu:.2f}x ({on.worker_cpu_s:.1f} vs {off.worker_cpu_s:.1f} s); "
                    f"{on.signed_requests or 0:,} signed requests"
                ),
            }
        )
    return out


def targets(cells: list[Cell]) -> list[str]:
    by = {(c.workload, c.system): c for c in cells if c.variant is None}
    lines = []
    iso = by.get(("isolation", "timers"))
    if iso:
        ok = iso.p99_ms <= 100 and iso.never == 0 and "p99" not in iso.lower_bounds
        lines.append(
            f"target isolation/timers healthy p99 <= 100 ms, none never: "
            f"{'met' if ok else 'MISSED'} ({iso.p99_ms:.0f} ms, {iso.never} never)"
        )
    burst, eta = by.get(("burst", "timers")), by.get(("burst", "celery-eta"))
    if burst:
        times = burst.throughput / eta.throughput if eta and eta.throughput > 0 else None
        if times is not None:
            lines.append(
                f"target burst/timers throughput >= 3x celery-eta: "
                f"{'met' if times >= 3 else 'MISSED'} ({times:.2f}x, {burst.timers:,} timers)"
            )
        ok = (
            times is not None
            and times >= 5
            and burst.p99_ms <= 1000
            and burst.never == 0
            and "p99" not in burst.lower_bounds
        )
        lines.append(
            f"target burst/timers throughput >= 5x celery-eta and p99 <= 1 s: "
            f"{'met' if ok else 'MISSED'} ("
            + (f"{times:.2f}x, " if times is not None else "no celery-eta row, ")
            + f"p99 {burst.p99_ms:.0f} ms, {burst.timers:,} timers)"
        )
    for name in ("steady", "steady-2000"):
        steady = by.get((name, "timers"))
        if steady:
            ok = steady.p99_ms <= 50 and steady.never == 0 and "p99" not in steady.lower_bounds
            gt = ">" if "p99" in steady.lower_bounds else ""
            lines.append(
                f"target {name}/timers p99 <= 50 ms, none never: {'met' if ok else 'MISSED'} "
                f"({gt}{steady.p99_ms:.0f} ms, {steady.never} never, {steady.throughput:.0f} cb/s)"
            )
    lines.extend(scale_targets(by))
    tasks, plain = by.get(("celery-tasks", "timers")), by.get(("celery-tasks", "celery-eta"))
    if tasks:
        ok = tasks.twice == 0 and tasks.never == 0 and tasks.once == tasks.timers > 0
        lines.append(
            f"target celery-tasks/timers every task run exactly once: "
            f"{'met' if ok else 'MISSED'} ({tasks.twice} twice, {tasks.never} never)"
        )
        if plain and tasks.calls_per_s and plain.calls_per_s:
            share = tasks.calls_per_s / plain.calls_per_s
            lines.append(
                f"target celery-tasks durable_eta calls/s >= 50% of plain apply_async: "
                f"{'met' if share >= 0.5 else 'MISSED'} ({share:.0%})"
            )
    flaky = by.get(("flaky", "timers"))
    if flaky:
        ok = (
            flaky.as_expected == flaky.timers > 0
            and flaky.never == 0
            and flaky.p99_ms <= 100
            and "p99" not in flaky.lower_bounds
        )
        gt = ">" if "p99" in flaky.lower_bounds else ""
        lines.append(
            f"target flaky/timers every timer completed after exactly 2 attempts, 2nd attempt "
            f"p99 <= 100 ms: {'met' if ok else 'MISSED'} ({flaky.as_expected}/{flaky.timers}, "
            f"{gt}{flaky.p99_ms:.0f} ms)"
        )
    return lines


def scale_targets(by: dict[tuple[str, str], Cell]) -> list[str]:
    """The scale rows: load statement <= 50 ms, scheduler RSS <= 150 MB, p99 within 20% of the
    steady row (the same load on an empty table) of the same run."""
    lines = []
    steady = by.get(("steady", "timers"))
    for name in ("scale", "scale-10m"):
        cell = by.get((name, "timers"))
        if cell is None:
            continue
        rows = f"{cell.background_rows or 0:,} pending"
        ms, rss = cell.loader_ms, cell.scheduler_peak_rss_mb
        if ms is not None:
            lines.append(
                f"target {name}/timers load statement <= 50 ms ({rows}): "
                f"{'met' if ms <= 50 else 'MISSED'} ({ms:.1f} ms)"
            )
        if rss is not None:
            lines.append(
                f"target {name}/timers scheduler RSS <= 150 MB ({rows}): "
                f"{'met' if rss <= 150 else 'MISSED'} ({rss:.0f} MB)"
            )
        if steady is not None and steady.p99_ms > 0:
            ratio = cell.p99_ms / steady.p99_ms
            ok = ratio <= 1.2 and cell.never == 0 and "p99" not in cell.lower_bounds
            lines.append(
                f"target {name}/timers p99 within 20% of steady/timers ({rows}): "
                f"{'met' if ok else 'MISSED'} ({cell.p99_ms:.0f} vs {steady.p99_ms:.0f} ms, "
                f"{ratio:.2f}x)"
            )
    return lines


def table(cells: list[Cell], idle: dict[str, float], rates: dict[str, float]) -> str:
    labels = [c.workload + (f":{c.variant}" if c.variant else "") for c in cells]
    wide = max([13] + [len(label) + 2 for label in labels])  # retention:baseline
    header = (
        f"{'workload':<{wide}}{'system':<11}{'timers':>7}{'once':>7}{'twice':>6}{'never':>6}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'cb/s':>8}{'calls/s':>9}{'pg tx/min':>10}"
        f"{'sched cpu s':>12}{'sched MB':>9}{'wrk cpu s':>10}"
    )
    lines = [header, "-" * len(header)]

    def opt(v: float | None, fmt: str) -> str:
        return format(v, fmt) if v is not None else "-"

    for c, label in zip(cells, labels, strict=True):

        def ms(name: str, v: float, c: Cell = c) -> str:
            return (">" if name in c.lower_bounds else "") + format(v, ".0f")

        lines.append(
            f"{label:<{wide}}{c.system:<11}{c.timers:>7}{c.once:>7}{c.twice:>6}{c.never:>6}"
            f"{ms('p50', c.p50_ms):>9}{ms('p99', c.p99_ms):>9}{ms('max', c.max_ms):>9}"
            f"{c.throughput:>8.0f}{opt(c.calls_per_s, '.0f'):>9}"
            f"{opt(c.pg_statements_per_min, '.0f'):>10}{opt(c.scheduler_cpu_s, '.1f'):>12}"
            f"{opt(c.scheduler_peak_rss_mb, '.0f'):>9}{opt(c.worker_cpu_s, '.1f'):>10}"
        )
        for note in c.notes:
            lines.append(f"{'':<24}note: {note}")
    found = ratios(cells)
    if found:
        lines.append("")
        lines.extend(r["text"] for r in found)
    lines.extend(targets(cells))
    lines.append("")
    for system, per_min in idle.items():
        lines.append(
            f"idle minute, {system} scheduler: {per_min:.1f} PostgreSQL statements/min "
            "(counted by a proxy)"
        )
    for name, value in rates.items():
        lines.append(f"{name}: {value:,.0f}")
    return "\n".join(lines)


def write_json(
    out: Path,
    cells: list[Cell],
    idle: dict[str, float],
    rates: dict[str, float],
    page: PageReport | None,
    retention: RetentionReport | None,
    claims: ClaimSizeReport | None,
    claim_path: ClaimPathReport | None = None,
) -> None:
    """The raw numbers of the run (bench/results/latest.json by default)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "cells": [asdict(c) for c in cells],
                "ratios": [{k: v for k, v in r.items() if k != "text"} for r in ratios(cells)],
                "targets": targets(cells),
                "idle": idle,
                "rates": rates,
                **({"page": asdict(page)} if page is not None else {}),
                **({"retention": asdict(retention)} if retention is not None else {}),
                **({"claim_size": asdict(claims)} if claims is not None else {}),
                **({"claim_path": claim_path_json(claim_path)} if claim_path else {}),
                "machine": {"cpus": os.cpu_count()},
            },
            indent=2,
        )
    )


def claim_path_json(report: ClaimPathReport) -> dict[str, Any]:
    return {
        **asdict(report),
        "per_cpu_s": report.per_cpu_s,
        "per_wall_s": report.per_wall_s,
        "target_met": report.met,
    }
