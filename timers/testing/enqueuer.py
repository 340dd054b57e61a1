"""The twin of `CeleryEnqueuer`: the messages it would send, kept in a list."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from timers.models import Claimed
from timers.storage import Claim


class RecordingEnqueuer:
    """The twin of `CeleryEnqueuer`: keeps the claims it was given, one list per message of up to
    `per_task` (`messages`, as a worker reads them), and the claimed timers themselves as given
    (`enqueued`: with their due time and schedule); while `down`, it refuses every message and
    `ready()` is False."""

    def __init__(self, per_task: int = 50) -> None:
        self.per_task = per_task
        self.down = False
        self.messages: list[list[Claim]] = []
        self.enqueued: list[Claimed] = []
        self.consumed = 0  # messages taken from the queue by workers
        self._refused = False

    def queue_idle(self) -> bool:
        if self.down:
            raise ConnectionError("the broker is down (recording enqueuer)")
        return self.consumed == len(self.messages)

    def consume(self) -> None:
        """Workers take every waiting message."""
        self.consumed = len(self.messages)

    def ready(self) -> bool:
        if self._refused and self.down:
            return False
        self._refused = False
        return True

    def enqueue(self, timers: Sequence[Claimed]) -> list[uuid.UUID]:
        if self.down:
            self._refused = True
            return [t.id for t in timers]
        for start in range(0, len(timers), self.per_task):
            self.messages.append([(t.id, t.claim) for t in timers[start : start + self.per_task]])
        self.enqueued.extend(timers)
        return []

    @property
    def sent(self) -> list[Claim]:
        return [claim for message in self.messages for claim in message]
