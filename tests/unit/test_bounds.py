"""Every timer is bounded: its size and its metadata's keys (no service needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from timers.models import (
    MAX_METADATA_KEYS,
    MAX_TIMER_BYTES,
    InvalidField,
    check_timer_bounds,
)


def config_of(size: int) -> dict[str, Any]:
    """An http callback config whose compact JSON is `size` bytes in UTF-8."""
    base = {"type": "http", "url": "https://receiver.example/hook", "payload": ""}
    room = size - len(json.dumps(base, separators=(",", ":")))
    return {**base, "payload": "x" * room}


def test_a_timer_of_64_kib_is_accepted_and_one_byte_more_is_refused() -> None:
    check_timer_bounds(config_of(MAX_TIMER_BYTES), None, None)
    with pytest.raises(InvalidField) as refused:
        check_timer_bounds(config_of(MAX_TIMER_BYTES + 1), None, None)
    assert refused.value.field == "timer"
    assert "65,537 bytes" in str(refused.value) and "65,536 bytes" in str(refused.value)


def test_the_size_is_config_metadata_and_retry_together_in_utf8_bytes() -> None:
    half = config_of(MAX_TIMER_BYTES // 2)
    check_timer_bounds(half, {"note": "y" * 1000}, {"max_attempts": 3})
    with pytest.raises(InvalidField, match="timer: "):
        check_timer_bounds(half, {"note": "y" * (MAX_TIMER_BYTES // 2)}, None)
    with pytest.raises(InvalidField, match="timer: "):
        check_timer_bounds(half, None, {"note": "z" * (MAX_TIMER_BYTES // 2)})
    # 22,000 characters of three bytes each: 66,000 bytes, over the limit.
    with pytest.raises(InvalidField, match="timer: "):
        check_timer_bounds({"type": "http", "payload": "€" * 22_000}, None, None)


def test_metadata_has_at_most_32_keys() -> None:
    check_timer_bounds(config_of(100), {f"k{i}": i for i in range(MAX_METADATA_KEYS)}, None)
    with pytest.raises(InvalidField) as refused:
        check_timer_bounds(config_of(100), {f"k{i}": i for i in range(MAX_METADATA_KEYS + 1)}, None)
    assert str(refused.value) == "metadata: 33 keys; a timer's metadata has at most 32"
