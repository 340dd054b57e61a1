"""The one settings table: README, `--help` and the Settings defaults all come from it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from timers.config import SETTINGS, ConfigError, Settings, markdown_table, settings_from_env

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_shows_the_settings_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "out of date: paste `python -m timers.config` into README"


def test_every_setting_is_a_field_and_every_field_a_setting() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    assert {s.attribute: s.default for s in SETTINGS} == fields


@pytest.mark.parametrize("argv", [["-m", "timers.cli", "--help"], ["-m", "timers.scheduler", "-h"]])
def test_help_lists_every_variable_with_its_default(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    flat = " ".join(out.split())
    for setting in SETTINGS:
        assert setting.variable in flat
        assert f"[default: {setting.default_text.replace('`', '')}]" in flat


def test_seed_mode_is_the_original_polling_design() -> None:
    seed = settings_from_env({"TIMERS_MODE": "seed"})
    assert (seed.listen, seed.claim_batch_size, seed.callbacks_per_task) == (False, 1, 1)
    default = settings_from_env({})
    assert (default.listen, default.claim_batch_size, default.callbacks_per_task) == (True, 500, 50)
    with pytest.raises(ConfigError, match="TIMERS_MODE must be one of default, seed"):
        settings_from_env({"TIMERS_MODE": "fast"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIMERS_DELIVERY_LEASE": "nan"}, "TIMERS_DELIVERY_LEASE must be a finite number"),
        (
            {"TIMERS_MAX_IN_FLIGHT_PER_HOST": "0"},
            "TIMERS_MAX_IN_FLIGHT_PER_HOST must be at least 1",
        ),
        ({"CELERY_WORKER_CONCURRENCY": "many"}, "CELERY_WORKER_CONCURRENCY must be a whole number"),
        ({"PORT": "70000"}, "PORT must be between 1 and 65535"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_env(env)
