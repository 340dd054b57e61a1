"""The line `make test` ends with: the groups that did not run and the command for each."""

from __future__ import annotations

from tests.support.skips import BROWSER, COMPOSE, summary_line


def reason(group_name: str, command: str) -> str:
    return f"Skipped: [{group_name}] missing here; to run it: {command}"


def test_every_group_that_did_not_run_is_counted_with_its_command() -> None:
    reasons = [reason("browser", BROWSER.command)] * 6 + [reason("compose", COMPOSE.command)] * 2
    line = summary_line(reasons + ["Skipped: something else"], ["faults"] * 9 + ["wheel"] * 4)
    assert line == (
        "not run: browser (6, no chromium): apt-get install chromium"
        " · compose (2, no docker compose): apt-get install docker-compose"
        " · faults (9): make test-faults · wheel (4): make test-wheel"
    )


def test_nothing_to_say_when_every_group_ran() -> None:
    assert summary_line(["Skipped: something else"], ["not-a-group"]) is None
