"""Prints the fault suite's table once every scenario has run."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.faults.test_faults import Result, results_table

    results = [
        Result(**value)
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", [])
        if name == "fault_result"
    ]
    if results:
        terminalreporter.write_sep("=", "fault injection")
        terminalreporter.write_line(results_table(results))
