"""The errors the Python API (`timers.Timers`) and the REST client (`timers.client.Client`) raise,
in one place so code can catch them whichever way it reaches timers."""

from __future__ import annotations

import uuid

from timers.storage import StoreError, StoreUnavailable, TimerNotFound, TimerNotPending

__all__ = [
    "InvalidTimer",
    "RedriveLimitReached",
    "StoreError",
    "StoreUnavailable",
    "TimerNotFound",
    "TimerNotPending",
    "TimersUnavailable",
    "Unauthorized",
]


class InvalidTimer(ValueError):
    """The timer was refused (the API's code 2): the message names the field. Nothing was stored."""


class Unauthorized(PermissionError):
    """The API key was missing or wrong (the API's code 4)."""


class TimersUnavailable(ConnectionError):
    """The service could not be reached or failed (the API's code 1); try again later."""


class RedriveLimitReached(ValueError):
    """A failed timer was redriven as often as one may be (`timers.retries.MAX_REDRIVES`); it
    stays failed."""

    def __init__(self, timer_id: uuid.UUID, redrives: int) -> None:
        super().__init__(
            f"timer {timer_id} was redriven {redrives} times already, the most a timer may be"
        )
        self.timer_id = timer_id
        self.redrives = redrives
