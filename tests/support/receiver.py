"""Waiting helpers for tests that watch a callback receiver."""

from __future__ import annotations

import time
from typing import Any

from timers.receiver import CallbackReceiver as Receiver

__all__ = ["Receiver", "wait_until"]


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
