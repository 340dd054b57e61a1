"""Retry policies: whether a failed delivery is tried again, and when. Pure decisions, no I/O.

    "retry": {"max_attempts": 5, "backoff": "exponential", "initial_delay": 1, "max_delay": 3600}

A timer's own policy, else the server's `TIMERS_DEFAULT_RETRY` (one attempt unless set). Retried:
network errors, timeouts, HTTP 408, 429 and 5xx; `Retry-After` is honoured (capped by
`max_delay`). Not retried: other 4xx (410 Gone included), redirects, refused destinations and
invalid configs. Exponential backoff uses full jitter: the n-th retry waits a random time between
1 s and min(max_delay, initial_delay × 2^(n-1)).

Bounded, so that one timer can't be made into a flood of requests to someone else's server: at
most `MAX_ATTEMPTS` attempts, `initial_delay` and `max_delay` at least `MIN_DELAY`, and no retry
ever follows an attempt sooner than `MIN_DELAY` (whatever the jitter or a receiver's
`Retry-After`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from timers.models import InvalidField

BACKOFFS = ("exponential", "fixed")
MAX_ATTEMPTS = 25
MIN_DELAY = 1.0
# Times a failed timer may be redriven by hand (`POST /timers/{id}/retry`), each a fresh budget.
MAX_REDRIVES = 10
MAX_DELAY = 7 * 24 * 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    backoff: str = "exponential"
    initial_delay: float = 1.0
    max_delay: float = 3600.0

    @classmethod
    def from_config(cls, config: Any, field: str = "retry") -> RetryPolicy:
        """Parse and check a policy object; raises InvalidField naming the field."""
        if not isinstance(config, Mapping):
            raise InvalidField(field, "must be an object")
        unknown = sorted(set(config) - {"max_attempts", "backoff", "initial_delay", "max_delay"})
        if unknown:
            raise InvalidField(field, f"unknown field {unknown[0]!r}")
        attempts = config.get("max_attempts", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise InvalidField(f"{field}.max_attempts", "must be a whole number")
        if not 1 <= attempts <= MAX_ATTEMPTS:
            raise InvalidField(f"{field}.max_attempts", f"must be 1 to {MAX_ATTEMPTS}")
        backoff = config.get("backoff", "exponential")
        if backoff not in BACKOFFS:
            raise InvalidField(f"{field}.backoff", f"must be one of {', '.join(BACKOFFS)}")
        delays = {}
        for name, default in (("initial_delay", 1.0), ("max_delay", 3600.0)):
            value = config.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidField(f"{field}.{name}", "must be a number of seconds")
            if not MIN_DELAY <= value <= MAX_DELAY:
                raise InvalidField(
                    f"{field}.{name}", f"must be {MIN_DELAY:g} to {MAX_DELAY:g} seconds"
                )
            delays[name] = float(value)
        if delays["max_delay"] < delays["initial_delay"]:
            raise InvalidField(f"{field}.max_delay", "must not be less than initial_delay")
        return cls(attempts, backoff, delays["initial_delay"], delays["max_delay"])

    def to_config(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "backoff": self.backoff,
            "initial_delay": self.initial_delay,
            "max_delay": self.max_delay,
        }


@dataclass(frozen=True)
class DeliveryResult:
    """How one attempt went: `error` None when delivered; `status` the HTTP answer if there was
    one; `retryable` whether trying again can help; `retry_after` what the receiver asked for."""

    error: str | None
    status: int | None = None
    retryable: bool = True
    retry_after: float | None = None


def retryable_status(status: int) -> bool:
    return status in (408, 429) or 500 <= status <= 599


def next_delay(
    policy: RetryPolicy,
    attempt: int,
    result: DeliveryResult,
    rand: Callable[[float, float], float] = random.uniform,
) -> float | None:
    """Seconds until the next attempt after attempt number `attempt` (1 = the first) ended with
    `result`, or None when there is none (delivered, not retryable, or the budget is spent)."""
    if result.error is None or not result.retryable or attempt >= policy.max_attempts:
        return None
    if policy.backoff == "fixed":
        delay = policy.initial_delay
    else:
        ceiling = min(policy.max_delay, policy.initial_delay * 2 ** (attempt - 1))
        delay = rand(MIN_DELAY, max(MIN_DELAY, ceiling))
    if result.retry_after is not None:
        delay = max(delay, result.retry_after)
    return max(MIN_DELAY, min(delay, policy.max_delay))
