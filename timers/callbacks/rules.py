"""What a deployment lets callbacks do, beyond each kind's own checks: the outbound policy for
`http` URLs, whether `celery` callbacks have a task broker and which tasks and queues they may
reach, and the subjects `nats` callbacks may publish to.

The same rules are applied where a timer comes in (the API, the Python API) and again in the
worker before delivery, so a config stored some other way is never delivered outside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from timers.outbound import OutboundPolicy

if TYPE_CHECKING:
    from timers.config import Settings


@dataclass(frozen=True)
class CallbackRules:
    """The defaults are those of the default settings: no task broker (so no `celery`
    callback), no task allowed, the queue `celery`, any NATS subject but the reserved ones."""

    # With a policy, `http` URLs naming a refused address literally are refused at once (the
    # API's check); delivery checks every address again after DNS resolution either way.
    policy: OutboundPolicy | None = None
    task_broker: bool = False  # TIMERS_TASK_BROKER_URL is set
    celery_tasks: tuple[str, ...] = ()  # TIMERS_CELERY_TASKS: globs
    celery_queues: tuple[str, ...] = ("celery",)  # TIMERS_CELERY_QUEUES: globs
    nats_subjects: tuple[str, ...] = ()  # TIMERS_NATS_SUBJECTS: prefixes (none: any)

    @classmethod
    def from_settings(cls, settings: Settings, *, outbound: bool = False) -> CallbackRules:
        """The rules `settings` give; with `outbound`, also the outbound policy of
        TIMERS_ALLOWED_NETWORKS (the API passes it; the Python API and the worker do not)."""
        return cls(
            policy=OutboundPolicy(settings.allowed_networks) if outbound else None,
            task_broker=bool(settings.task_broker),
            celery_tasks=settings.celery_tasks,
            celery_queues=settings.celery_queues,
            nats_subjects=settings.nats_subjects,
        )
