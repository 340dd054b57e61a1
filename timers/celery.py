"""Durable eta for an existing Celery app, with one call and no other code change.

    import timers.celery
    timers.celery.durable_eta(app, threshold=60)

From then on, `task.apply_async(…, eta=…)` or `countdown=…` (and `signature.apply_async`,
`task.apply_async` through chains' first step) further ahead than `threshold` seconds becomes a
durable timer instead of an eta message: it returns an `AsyncResult` whose id is the timer id, the
task later runs under that id, and it can be listed, moved or canceled:

    result = expire_order.apply_async((42,), countdown=24 * 3600)
    timers.celery.cancel(result)            # or Timers.from_env().cancel(result.id)

Calls without a delay, or with a shorter one, are untouched. Calls the drop-in can't express
(callbacks with `link`/`link_error`, your own `task_id`, an `expires`) keep Celery's own eta, with a
warning. What this removes: duplicates after Redis's visibility timeout (kombu#337), worker memory
filled with prefetched eta tasks, and revokes forgotten at a worker restart.

The tasks and queues must be on the allow-lists the environment gives the workers too
(`TIMERS_TASK_BROKER_URL`, `TIMERS_CELERY_TASKS`, `TIMERS_CELERY_QUEUES`); a call outside them
raises `InvalidTimer` instead of being sent.

`BeatScheduler` (from `timers.beat`) replaces celery beat's scheduler: `celery -A proj beat -S
timers.celery.BeatScheduler` makes `beat_schedule` recurring schedules and sends nothing itself.
"""

from __future__ import annotations

import functools
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from timers.beat import BeatScheduler
from timers.library import Timers
from timers.models import utc_now

log = logging.getLogger(__name__)

__all__ = ["BeatScheduler", "cancel", "durable_eta"]

# Options the drop-in carries over into the timer; any other one it can't honour.
_CARRIED = {"eta", "countdown", "queue", "priority", "headers"}
_HARMLESS = {"retry", "retry_policy", "serializer", "compression", "exchange", "routing_key"}


def durable_eta(app: Any, *, threshold: float = 60.0, timers: Timers | None = None) -> None:
    """Make `apply_async` calls on `app`'s tasks delayed by more than `threshold` seconds durable
    timers (see the module). `timers` defaults to `Timers.from_env()`, made on first use."""
    base = app.Task
    original = base.apply_async
    if getattr(original, "_timers_durable_eta", False):
        return
    made: list[Timers] = []
    lock = threading.Lock()

    def store() -> Timers:
        if timers is not None:
            return timers
        with lock:
            if not made:
                made.append(Timers.from_env())
            return made[0]

    @functools.wraps(original)
    def apply_async(
        self: Any,
        args: Any = None,
        kwargs: Any = None,
        task_id: Any = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: Any = None,
        **options: Any,
    ) -> Any:
        delay = _delay(options.get("eta"), options.get("countdown"))
        if delay is None or delay <= threshold:
            return original(
                self, args, kwargs, task_id, producer, link, link_error, shadow, **options
            )
        unsupported = sorted(set(options) - _CARRIED - _HARMLESS)
        if task_id or link or link_error or shadow or unsupported:
            log.warning(
                "%s: keeping Celery's own eta for a call with %s",
                self.name,
                ", ".join(unsupported or ["task_id/link/link_error/shadow"]),
            )
            return original(
                self, args, kwargs, task_id, producer, link, link_error, shadow, **options
            )
        timer = store().schedule(
            self,
            eta=_aware(options.get("eta")),
            countdown=options.get("countdown"),
            args=tuple(args or ()),
            kwargs=kwargs,
            queue=options.get("queue"),
            priority=options.get("priority"),
            headers=options.get("headers"),
        )
        return self.AsyncResult(str(timer.id))

    apply_async._timers_durable_eta = True  # type: ignore[attr-defined]
    base.apply_async = apply_async


def cancel(result_or_id: Any, timers: Timers | None = None) -> None:
    """Cancel the durable timer behind an `AsyncResult` (or its id) before it fires; raises
    TimerNotFound, or TimerNotPending once it has fired."""
    timer_id = getattr(result_or_id, "id", result_or_id)
    (timers or Timers.from_env()).cancel(str(timer_id))


def _delay(eta: Any, countdown: Any) -> float | None:
    """Seconds from now until the call is due, or None for a call without a delay."""
    if countdown is not None:
        return float(countdown)
    aware = _aware(eta)  # Celery reads a naive eta as UTC
    if aware is None:
        return None
    return (aware - utc_now()).total_seconds()


def _aware(eta: Any) -> datetime | None:
    if eta is None:
        return None
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    return eta if eta.tzinfo is not None else eta.replace(tzinfo=UTC)
