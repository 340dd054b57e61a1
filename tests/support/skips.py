"""Test groups that skip when the machine lacks a tool, and the one line `make test` ends with:
which groups did not run and the command that enables each."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

import pytest


@dataclass(frozen=True)
class Group:
    name: str
    lacking: str  # what the machine is missing
    command: str  # the one command that enables the group


BROWSER = Group("browser", "no chromium", "apt-get install chromium")
COMPOSE = Group("compose", "no docker compose", "apt-get install docker-compose")
# Deselected by default (pyproject's addopts); each has its own make target.
MARKED = {
    "faults": "make test-faults",
    "wheel": "make test-wheel",
    "live": "make test-schedules-live",
}

_TAG = re.compile(r"\[(\w+)\]")
_GROUPS = {group.name: group for group in (BROWSER, COMPOSE)}


def skip(group: Group, detail: str) -> NoReturn:
    """Skip this test as one of `group`: the reason names the group and its command."""
    pytest.skip(f"[{group.name}] {detail}; to run it: {group.command}")


def group_of(reason: str) -> Group | None:
    found = _TAG.search(reason)
    return _GROUPS.get(found.group(1)) if found else None


def summary_line(skip_reasons: Iterable[str], deselected_markers: Iterable[str]) -> str | None:
    """One line naming every group that did not run, how many tests it holds and its command;
    None when every group ran."""
    skipped = Counter(g for g in map(group_of, skip_reasons) if g is not None)
    marked = Counter(m for m in deselected_markers if m in MARKED)
    parts = [
        f"{group.name} ({count}, {group.lacking}): {group.command}"
        for group, count in sorted(skipped.items(), key=lambda item: item[0].name)
    ]
    parts += [f"{name} ({count}): {MARKED[name]}" for name, count in sorted(marked.items())]
    return "not run: " + " · ".join(parts) if parts else None
