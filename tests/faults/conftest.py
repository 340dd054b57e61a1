"""Prints the fault suite's table once every scenario has run."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.faults.test_faults import RESULTS, results_table

    if RESULTS:
        terminalreporter.write_sep("=", "fault injection")
        terminalreporter.write_line(results_table())
