"""Sending callback tasks to the Celery broker, for the scheduler (the tasks themselves are in
`timers.worker.tasks`)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from timers.config import CALLBACKS_PER_TASK
from timers.models import Claimed

log = logging.getLogger(__name__)

BATCH_TASK_NAME = "timers.execute_callbacks"
TASK_NAME = "timers.execute_callback"  # messages from earlier versions


class CeleryEnqueuer:
    """Sends the callback tasks over one broker connection of its own, kept open between ticks.
    Timers that came due together travel up to `per_task` in one `timers.execute_callbacks`
    message (a lone timer is a batch of one).

    After a refused message the broker counts as down: `ready()` then probes it (at most once per
    call, so once per tick) instead of every tick claiming timers only to release them again.
    """

    def __init__(self, app: Any, per_task: int = CALLBACKS_PER_TASK) -> None:
        self.app = app
        self.per_task = per_task
        self.queue: str = app.conf.task_default_queue
        self._connection: Any = None
        self._down = False

    def ready(self) -> bool:
        if not self._down:
            return True
        try:
            connection = self.app.connection_for_write()
            connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            log.debug("the broker is still unreachable: %s", exc)
            return False
        self._connection = connection
        self._down = False
        log.warning("the broker is reachable again; enqueueing resumes")
        return True

    def enqueue(self, timers: Sequence[Claimed]) -> list[uuid.UUID]:
        for start in range(0, len(timers), self.per_task):
            group = timers[start : start + self.per_task]
            try:
                if self._connection is None:
                    self._connection = self.app.connection_for_write()
                self.app.send_task(
                    BATCH_TASK_NAME,
                    args=[[[str(t.id), t.claim] for t in group]],
                    connection=self._connection,
                    retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
                )
            except Exception as exc:
                log.warning(
                    "the broker refused the callbacks of %d timers (%s); enqueueing pauses until "
                    "it is back",
                    len(timers) - start,
                    exc,
                )
                self.close()
                self._down = True
                return [t.id for t in timers[start:]]
        return []

    def queue_idle(self) -> bool:
        """Whether no callback message is waiting in the queue (False if the broker can't say)."""
        with self.app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
            channel = connection.channel()
            try:
                _, waiting, _ = channel.queue_declare(queue=self.queue, passive=True)
            except connection.channel_errors:
                return True  # no such queue yet: nothing waits in it
            finally:
                channel.close()
        return int(waiting) == 0

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:
                log.debug("closing the broker connection failed", exc_info=True)
            self._connection = None
