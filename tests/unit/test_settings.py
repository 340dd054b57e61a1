"""The one settings table: README, `--help` and the Settings defaults all come from it."""

from __future__ import annotations

import dataclasses
import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from timers.callbacks import CallbackRules
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


def test_callback_rules_come_from_the_settings() -> None:
    settings = settings_from_env(
        {
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "TIMERS_TASK_BROKER_URL": "redis://127.0.0.1:6379/5",
            "TIMERS_CELERY_TASKS": "shop.tasks.*, billing.charge",
            "TIMERS_CELERY_QUEUES": "shop",
            "TIMERS_NATS_SUBJECTS": "orders.",
            "TIMERS_ALLOWED_NETWORKS": "10.0.0.0/8",
        }
    )
    rules = CallbackRules.from_settings(settings)
    assert rules == CallbackRules(
        task_broker=True,
        celery_tasks=("shop.tasks.*", "billing.charge"),
        celery_queues=("shop",),
        nats_subjects=("orders.",),
    )
    # The API checks literal addresses at once, with the outbound policy the settings give.
    checked = CallbackRules.from_settings(settings, outbound=True)
    assert checked.policy is not None
    assert checked.policy.refusal(ipaddress.ip_address("10.1.2.3")) is None
    assert checked.policy.refusal(ipaddress.ip_address("192.168.1.1")) is not None


def test_the_default_rules_are_those_of_the_default_settings() -> None:
    assert CallbackRules.from_settings(Settings()) == CallbackRules()
    assert CallbackRules().task_broker is False and CallbackRules().celery_tasks == ()


def test_a_task_broker_that_is_the_timers_broker_is_refused_unless_shared_on_purpose() -> None:
    timers_broker = {"REDIS_URL": "redis://broker.internal:6379/0"}
    for same in ("redis://broker.internal:6379", "redis://:secret@BROKER.internal:6379/0?x=1"):
        with pytest.raises(ConfigError, match="TIMERS_TASK_BROKER_SHARED=true"):
            settings_from_env({**timers_broker, "TIMERS_TASK_BROKER_URL": same})
        shared = {**timers_broker, "TIMERS_TASK_BROKER_URL": same, "TIMERS_TASK_BROKER_SHARED": "1"}
        assert settings_from_env(shared).task_broker == same
    other_db = {**timers_broker, "TIMERS_TASK_BROKER_URL": "redis://broker.internal:6379/5"}
    assert settings_from_env(other_db).task_broker_url == "redis://broker.internal:6379/5"
    amqp = {"CELERY_BROKER_URL": "amqp://guest@rabbit:5672//"}
    with pytest.raises(ConfigError):
        settings_from_env({**amqp, "TIMERS_TASK_BROKER_URL": "pyamqp://other@rabbit:5672//"})
    assert settings_from_env({}).task_broker is None  # no task broker: celery callbacks off
