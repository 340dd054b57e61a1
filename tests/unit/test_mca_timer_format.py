"""mca-timer's spelling of callbacks (pure): NATS `topic` + `key`, JSON-null headers and payload,
the tagged `callback` responses show, and when a list's total is counted rather than estimated."""

from __future__ import annotations

import pytest

from timers import callbacks
from timers.api.compat import tagged
from timers.models import InvalidField
from timers.storage import EXACT_COUNT_LIMIT
from timers.store.totals import COUNT_COST_LIMIT, Plan

RULES = callbacks.CallbackRules()


def nats(**config: object) -> callbacks.Callback:
    return callbacks.parse("nats", {"type": "nats", **config}, "callback", rules=RULES)


def test_topic_and_key_make_the_subject_and_are_kept_as_given() -> None:
    keyed = nats(topic="timers.test.execution", key="test-key-123", headers=None, payload=None)
    assert keyed.subject == "timers.test.execution.test-key-123"  # type: ignore[attr-defined]
    assert keyed.to_config() == {
        "type": "nats",
        "topic": "timers.test.execution",
        "key": "test-key-123",
        "headers": {},
        "payload": None,
        "jetstream": False,
    }
    # A stored config parses back to the same callback (what the worker reads).
    assert callbacks.parse("nats", keyed.to_config(), rules=RULES) == keyed
    plain = nats(topic="orders", key=None)
    assert plain.subject == "orders" and "key" not in plain.to_config()  # type: ignore[attr-defined]


def test_the_subject_spelling_is_unchanged() -> None:
    ours = nats(subject="orders.expired", payload={"n": 1})
    assert ours.to_config()["subject"] == "orders.expired" and "topic" not in ours.to_config()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"topic": ""}, "callback.topic"),
        ({"topic": "   "}, "callback.topic"),
        ({"key": "k"}, "callback.topic"),
        ({"topic": "orders", "key": ""}, "callback.key"),
        ({"topic": "orders", "key": 42}, "callback.key"),
        ({"topic": "orders", "key": "a b"}, "callback.key"),
        ({"topic": "orders.*"}, "callback.topic"),
        ({"topic": "orders", "subject": "orders"}, "callback"),
    ],
)
def test_bad_topics_and_keys_are_refused_naming_the_field(
    config: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidField) as refused:
        nats(**config)
    assert refused.value.field == field


def test_the_tagged_callback_is_the_config_with_its_type() -> None:
    http = {"url": "https://example.com/hook", "headers": {"A": "***"}, "payload": None}
    assert tagged("http", http) == {"type": "http", **http}
    ours = {"type": "nats", "subject": "orders.expired", "headers": {}, "payload": 1}
    assert tagged("nats", ours) == {**ours, "topic": "orders.expired"}
    theirs = {"type": "nats", "topic": "orders", "key": "42"}
    assert tagged("nats", theirs) == theirs


@pytest.mark.parametrize(
    ("rows", "cost", "cheap"),
    [
        (0, 1.0, True),
        (EXACT_COUNT_LIMIT - 1, COUNT_COST_LIMIT, True),
        (EXACT_COUNT_LIMIT, 10.0, False),  # too many to count
        (10, COUNT_COST_LIMIT + 1, False),  # few, but found by scanning much of the table
    ],
)
def test_a_total_is_counted_only_when_the_planner_expects_few_rows_found_cheaply(
    rows: float, cost: float, cheap: bool
) -> None:
    assert Plan(rows, cost).cheap is cheap
