"""Where the delivery engine leaves the outcomes of finished deliveries and the outcome recorder
picks them up: the one thing the two share (the engine writes, the recorder drains)."""

from __future__ import annotations

import queue

from timers.storage import Outcome


class Outcomes:
    """Outcomes waiting to be recorded, oldest first (thread-safe; `put` never blocks)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()

    def put(self, outcome: Outcome) -> None:
        """Hand over the outcome of a finished delivery (the engine's `on_outcome`)."""
        self._queue.put(outcome)

    def get(self, wait: float = 0.0) -> Outcome | None:
        """The oldest waiting outcome, waiting up to `wait` seconds for one to come; None if none
        came, or if `interrupt` was called."""
        try:
            item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        return item

    def interrupt(self) -> None:
        """Make a `get` that is waiting (or the next one) return None at once."""
        self._queue.put(None)
