"""The `celery` callback kind against a deployment's rules: a task broker must be configured, the
task and the queue must be on their allow-lists, Celery's and this service's own names and kombu's
reserved keys are never reachable, and a message has a bounded size. Without any service."""

from __future__ import annotations

import json
from typing import Any

import pytest

import celeryconfig
from timers import callbacks
from timers.callbacks import CallbackRules
from timers.models import InvalidField

RULES = CallbackRules(
    task_broker=True,
    celery_tasks=("shop.tasks.*", "billing.charge"),
    celery_queues=("shop", "celery"),
)
OPEN = CallbackRules(task_broker=True, celery_tasks=("*",), celery_queues=("*",))


def task(**config: Any) -> dict[str, Any]:
    return {"type": "celery", "task": "shop.tasks.expire_order", "args": [42], **config}


def refusal(config: dict[str, Any], rules: CallbackRules = RULES) -> InvalidField:
    with pytest.raises(InvalidField) as info:
        callbacks.parse("celery", config, rules=rules)
    return info.value


def test_a_task_and_queue_on_the_allow_lists_are_accepted() -> None:
    for config in (task(), task(queue="shop"), task(task="billing.charge", queue="celery")):
        assert callbacks.parse("celery", config, rules=RULES).to_config()["task"] == config["task"]


def test_without_a_task_broker_celery_callbacks_are_off() -> None:
    off = CallbackRules(task_broker=False, celery_tasks=("*",), celery_queues=("*",))
    error = refusal(task(), off)
    assert "celery callbacks are off: set TIMERS_TASK_BROKER_URL" in str(error)
    assert CallbackRules().task_broker is False  # the default


@pytest.mark.parametrize(
    "name", ["shop.other.expire", "billing.charge_twice", "Shop.tasks.expire_order", "shop.tasks"]
)
def test_a_task_matching_no_glob_is_refused(name: str) -> None:
    error = refusal(task(task=name))
    assert error.field == "callback_config.task"
    assert "TIMERS_CELERY_TASKS" in error.reason


def test_no_task_is_allowed_by_default() -> None:
    error = refusal(task(), CallbackRules(task_broker=True))
    assert error.field == "callback_config.task"


@pytest.mark.parametrize(
    "name",
    ["celery.backend_cleanup", "celery.chord_unlock", "timers.execute_callbacks", "timers.x"],
)
def test_celery_and_timers_tasks_are_refused_whatever_the_allow_list(name: str) -> None:
    error = refusal(task(task=name), OPEN)
    assert error.field == "callback_config.task"


def test_the_queue_defaults_to_celery_and_must_be_on_the_allow_list() -> None:
    shop_only = CallbackRules(task_broker=True, celery_tasks=("shop.*",), celery_queues=("shop",))
    assert refusal(task(), shop_only).field == "callback_config.queue"  # no queue: `celery`
    assert refusal(task(queue="other"), shop_only).field == "callback_config.queue"
    assert refusal(task(queue="Shop"), shop_only).field == "callback_config.queue"
    assert callbacks.parse("celery", task(queue="shop"), rules=shop_only)
    globbed = CallbackRules(task_broker=True, celery_tasks=("shop.*",), celery_queues=("shop.*",))
    assert callbacks.parse("celery", task(queue="shop.eu"), rules=globbed)
    assert refusal(task(queue="shopping"), globbed).field == "callback_config.queue"


@pytest.mark.parametrize(
    "queue",
    [
        "timers",
        "celery.pidbox",
        "reply.celery.pidbox",
        "shop.pidbox",
        "unacked",
        "unacked_index",
        "unacked_mutex",
        "unacked_anything",
        "_kombu.binding.celery",
        "_kombu.binding.timers",
        "_kombu.binding_deadlines",
        "_kombu.binding_permanent.celery",
        "_kombu.fanout.celery",
    ],
)
def test_reserved_queues_are_refused_whatever_the_allow_list(queue: str) -> None:
    error = refusal(task(queue=queue), OPEN)
    assert error.field == "callback_config.queue"
    assert "reserved" in error.reason


def test_our_own_queue_is_the_one_celeryconfig_names() -> None:
    error = refusal(task(queue=celeryconfig.task_default_queue), OPEN)
    assert error.field == "callback_config.queue"


def test_arguments_are_at_most_32_kib_as_json() -> None:
    def sized(n: int) -> dict[str, Any]:
        # [args, kwargs] as compact JSON: [["x…"],{}] is n bytes
        return task(args=["x" * (n - len(json.dumps([[""], {}], separators=(",", ":"))))])

    assert callbacks.parse("celery", sized(32 * 1024), rules=RULES)
    error = refusal(sized(32 * 1024 + 1))
    assert error.field == "callback_config"
    assert "32 KiB" in error.reason
    half = "y" * (17 * 1024)
    assert refusal(task(args=[half], kwargs={"note": half})).field == "callback_config"


def test_headers_are_at_most_32_and_4_kib_as_json() -> None:
    assert callbacks.parse("celery", task(headers={f"h{i}": i for i in range(32)}), rules=RULES)
    error = refusal(task(headers={f"h{i}": i for i in range(33)}))
    assert error.field == "callback_config.headers" and "32" in error.reason
    error = refusal(task(headers={"tenant": "a" * 4096}))
    assert error.field == "callback_config.headers" and "4 KiB" in error.reason


def test_the_shape_is_checked_before_the_rules() -> None:
    # A malformed config says what is malformed, even where celery callbacks are off.
    error = refusal({"type": "celery", "task": "not a task!"}, CallbackRules())
    assert error.field == "callback_config.task"
