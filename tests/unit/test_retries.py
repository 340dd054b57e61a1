"""Retry policies are bounded: a timer (or the server's default) can't turn one callback into a
flood of them, and no attempt follows another by less than a second."""

from __future__ import annotations

from typing import Any

import pytest

from timers.config import ConfigError, settings_from_env
from timers.models import InvalidField
from timers.retries import DeliveryResult, RetryPolicy, next_delay

FAILED = DeliveryResult("HTTP 503", 503)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"max_attempts": 26}, "retry.max_attempts"),
        ({"max_attempts": 100, "initial_delay": 0}, "retry.max_attempts"),
        ({"max_attempts": 5, "initial_delay": 0}, "retry.initial_delay"),
        ({"max_attempts": 5, "initial_delay": 0.5}, "retry.initial_delay"),
        ({"max_attempts": 5, "initial_delay": 1, "max_delay": 0.5}, "retry.max_delay"),
        ({"max_attempts": 5, "initial_delay": 10, "max_delay": 5}, "retry.max_delay"),
    ],
)
def test_a_policy_beyond_the_limits_is_refused_naming_the_field(
    config: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidField) as refused:
        RetryPolicy.from_config(config)
    assert str(refused.value).startswith(f"{field}:"), str(refused.value)


def test_the_most_a_policy_may_ask_for_is_accepted() -> None:
    policy = RetryPolicy.from_config({"max_attempts": 25, "initial_delay": 1, "max_delay": 1})
    assert (policy.max_attempts, policy.initial_delay, policy.max_delay) == (25, 1.0, 1.0)


def test_the_servers_default_policy_has_the_same_limits() -> None:
    for raw in ('{"max_attempts": 100}', '{"max_attempts": 5, "initial_delay": 0}'):
        with pytest.raises(ConfigError, match="TIMERS_DEFAULT_RETRY"):
            settings_from_env({"TIMERS_DEFAULT_RETRY": raw})


@pytest.mark.parametrize("backoff", ["exponential", "fixed"])
def test_no_retry_comes_sooner_than_a_second(backoff: str) -> None:
    # Even a policy built in code with no floor, the lowest jitter and a receiver asking for 0 s.
    policy = RetryPolicy(max_attempts=25, backoff=backoff, initial_delay=0.0, max_delay=0.0)
    asked_now = DeliveryResult("HTTP 429", 429, retry_after=0.0)
    for attempt in range(1, 25):
        for result in (FAILED, asked_now):
            delay = next_delay(policy, attempt, result, rand=lambda low, high: low)
            assert delay is not None and delay >= 1.0, (attempt, result, delay)


def test_full_jitter_stays_between_a_second_and_the_backoff_ceiling() -> None:
    policy = RetryPolicy(max_attempts=25, initial_delay=1.0, max_delay=60.0)
    seen: list[tuple[float, float]] = []

    def rand(low: float, high: float) -> float:
        seen.append((low, high))
        return low

    assert next_delay(policy, 4, FAILED, rand=rand) == 1.0
    assert seen == [(1.0, 8.0)]
    assert next_delay(policy, 4, FAILED, rand=lambda low, high: high) == 8.0
    assert next_delay(policy, 25, FAILED) is None
