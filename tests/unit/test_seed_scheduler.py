"""The seed's scheduler (bench/seed_scheduler.py) is ours with the original polling design's
parameters; the shipped one keeps production's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.seed_scheduler import SEED
from timers.config import settings_from_env
from timers.scheduler.__main__ import build_scheduler

ROOT = Path(__file__).resolve().parents[2]
# Nothing is contacted: building the scheduler connects to neither.
ENV = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none", "REDIS_URL": "redis://127.0.0.1:9/0"}


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [({}, (True, 500, 50)), (SEED, (False, 1, 1))],
    ids=["shipped", "seed"],
)
def test_the_scheduler_takes_its_design_as_arguments(
    parameters: dict[str, object], expected: tuple[bool, int, int]
) -> None:
    scheduler, close = build_scheduler(settings_from_env(ENV), **parameters)  # type: ignore[arg-type]
    try:
        execution = scheduler.execution
        enqueuer = execution.enqueuer
        listens = scheduler.listener is not None
        assert (listens, execution.batch_size, enqueuer.per_task) == expected  # type: ignore[attr-defined]
    finally:
        close()


def test_the_seed_entry_has_its_own_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.seed_scheduler", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert "python -m bench.seed_scheduler" in out
    assert "TIMERS_MODE" not in out
