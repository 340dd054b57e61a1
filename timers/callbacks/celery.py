"""The `celery` callback kind: publish a Celery task message when the timer fires, with task id =
timer id, so Flower, the result backend and the application all see the timer's id.

    {"type": "celery", "task": "shop.tasks.expire_order", "args": [42],
     "kwargs": {"reason": "unpaid"}, "queue": "shop", "priority": 5, "headers": {"tenant": "acme"}}

The message goes to `TIMERS_TASK_BROKER_URL` (unset: `celery` callbacks are refused), to `queue`
(Celery's default `celery` when not given), in Celery's message protocol 2 with JSON. Whoever holds
an API key chooses the task and the queue, so both must be on the deployment's allow-lists
(`TIMERS_CELERY_TASKS`, `TIMERS_CELERY_QUEUES`), and some are never reachable whatever they say:
Celery's own tasks (`celery.*`) and ours (`timers.*`), our own queue, Celery's remote-control
mailboxes (`*.pidbox`) and the keys kombu's Redis transport keeps beside the queues (`unacked*`,
`_kombu.*`). Arguments are at most 32 KiB as JSON, headers at most 32 and 4 KiB.

`completed` means the broker accepted the message; publishing is retried until the callback
timeout, and only then is the timer `failed`. Each attempt is bounded too (one connection attempt,
socket timeouts), and the delivery stops waiting at the deadline whatever the publishing thread
does. What the task then does is Celery's business (its result backend, Flower). Delivery is at
least once, like every callback: a task that must not run twice checks its own id.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from timers.callbacks.base import DeliveryContext, Kind
from timers.callbacks.task_publisher import BATCH, DEFAULT_QUEUE, Publisher
from timers.models import InvalidField, check_json
from timers.retries import DeliveryResult
from timers.worker.destinations import OwnCap

if TYPE_CHECKING:
    from timers.callbacks.rules import CallbackRules

TASK_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
QUEUE_PATTERN = r"^[A-Za-z0-9_.:-]+$"
MAX_NAME_LENGTH = 255
# Headers Celery's message protocol uses itself; a timer's own headers can't replace them.
PROTOCOL_HEADERS = frozenset(
    {
        "id", "task", "root_id", "parent_id", "group", "lang", "eta", "expires", "retries",
        "timelimit", "argsrepr", "kwargsrepr", "origin", "shadow", "ignore_result",
        "replaced_task_nesting", "stamped_headers", "stamps",
    }
)  # fmt: skip
RETRY_EVERY = 0.5  # seconds between attempts to publish while the broker refuses
# Every `celery` callback of a worker process goes through its one publisher, in batches over one
# connection (a broker that hangs holds them all alike), so they share one cap of their own: two
# batches, one gathering while the other goes out. A cap per queue isolated nothing, and the
# deployment's 64 cut a herd's batches to 64 messages. A broker that refuses has at most this many
# deliveries of a process trying again at once.
PUBLISHING = OwnCap("celery", 2 * BATCH)
# Never sent, whatever TIMERS_CELERY_TASKS says: Celery's own tasks and this service's.
RESERVED_TASKS = ("celery.", "timers.")
# Never published to, whatever TIMERS_CELERY_QUEUES says (globs, case-sensitive like the names):
# our own queue (celeryconfig's `task_default_queue`), Celery's remote-control mailboxes
# (`celery.pidbox`, and `<id>.reply.celery.pidbox` for replies), and the keys kombu's Redis
# transport keeps beside the queues (kombu/transport/redis.py: `unacked`, `unacked_index`,
# `unacked_mutex`, `_kombu.binding.<exchange>`, `_kombu.binding_deadlines`,
# `_kombu.binding_permanent.<exchange>`; `_kombu.fanout.<exchange>` in older versions). Its
# fanout channels (`/0.<exchange>`) and priority lists (`<queue>\x06\x16<n>`) take characters no
# queue name may hold.
RESERVED_QUEUES = ("timers", "*.pidbox", "unacked*", "_kombu.*")
MAX_ARGUMENTS_BYTES = 32 * 1024  # args and kwargs together, as JSON
MAX_HEADERS = 32
MAX_HEADERS_BYTES = 4 * 1024  # as JSON


class CeleryConfig(BaseModel):
    """Publish the Celery task `task` with `args` and `kwargs` (all JSON), task id = timer id."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["celery"]
    task: str = Field(
        pattern=TASK_NAME_PATTERN,
        max_length=MAX_NAME_LENGTH,
        description="The task's registered name, a dotted identifier.",
        examples=["shop.tasks.expire_order"],
    )
    args: list[Any] = Field(
        default_factory=list, description="With kwargs, at most 32 KiB as JSON."
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(
        default=None,
        pattern=QUEUE_PATTERN,
        max_length=MAX_NAME_LENGTH,
        description="Default `celery`; must be on the server's TIMERS_CELERY_QUEUES.",
        examples=["shop"],
    )
    priority: int | None = Field(default=None, ge=0, le=255)
    headers: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra message headers (JSON values), at most 32 and 4 KiB as JSON.",
    )


@dataclass(frozen=True)
class CeleryCallback:
    kind = "celery"
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    headers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Any, field_prefix: str = "callback_config") -> CeleryCallback:
        """Parse and validate a `callback_config` object; raise InvalidField naming the field."""
        if not isinstance(config, Mapping):
            raise InvalidField(field_prefix, "must be an object")
        known = {"type", "task", "args", "kwargs", "queue", "priority", "headers"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise InvalidField(field_prefix, f"unknown field {unknown[0]!r}")
        if config.get("type") != "celery":
            raise InvalidField(
                f"{field_prefix}.type", f"must be 'celery', got {config.get('type')!r}"
            )
        task = config.get("task")
        if (
            not isinstance(task, str)
            or len(task) > MAX_NAME_LENGTH
            or not re.fullmatch(TASK_NAME_PATTERN, task)
        ):
            raise InvalidField(
                f"{field_prefix}.task", "is required: a task name such as shop.tasks.expire_order"
            )
        args = config.get("args", [])
        if not isinstance(args, list):
            raise InvalidField(f"{field_prefix}.args", "must be a list")
        kwargs = config.get("kwargs", {})
        if not isinstance(kwargs, Mapping):
            raise InvalidField(f"{field_prefix}.kwargs", "must be an object")
        for name in kwargs:
            if not isinstance(name, str) or not name.isidentifier():
                raise InvalidField(f"{field_prefix}.kwargs", f"{name!r} is not an argument name")
        queue = config.get("queue")
        if queue is not None and (
            not isinstance(queue, str)
            or len(queue) > MAX_NAME_LENGTH
            or not re.fullmatch(QUEUE_PATTERN, queue)
        ):
            raise InvalidField(f"{field_prefix}.queue", "must be a queue name such as shop")
        priority = config.get("priority")
        if priority is not None and (
            isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255
        ):
            raise InvalidField(f"{field_prefix}.priority", "must be a whole number 0-255")
        headers = config.get("headers", {})
        if not isinstance(headers, Mapping):
            raise InvalidField(f"{field_prefix}.headers", "must be an object")
        for name in headers:
            if name in PROTOCOL_HEADERS:
                raise InvalidField(
                    f"{field_prefix}.headers.{name}", "is set by Celery's message protocol"
                )
        for name, value in (("args", args), ("kwargs", kwargs), ("headers", headers)):
            check_json(value, f"{field_prefix}.{name}")
        size = json_size([args, kwargs])
        if size > MAX_ARGUMENTS_BYTES:
            raise InvalidField(
                field_prefix, f"args and kwargs take {size} bytes as JSON, at most 32 KiB"
            )
        if len(headers) > MAX_HEADERS:
            raise InvalidField(
                f"{field_prefix}.headers", f"at most {MAX_HEADERS} headers, got {len(headers)}"
            )
        size = json_size(headers)
        if size > MAX_HEADERS_BYTES:
            raise InvalidField(
                f"{field_prefix}.headers", f"take {size} bytes as JSON, at most 4 KiB"
            )
        return cls(task, list(args), dict(kwargs), queue, priority, dict(headers))

    def to_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"type": "celery", "task": self.task, "args": self.args}
        config["kwargs"] = self.kwargs
        if self.queue is not None:
            config["queue"] = self.queue
        if self.priority is not None:
            config["priority"] = self.priority
        if self.headers:
            config["headers"] = self.headers
        return config

    def destination(self) -> OwnCap:
        return PUBLISHING

    async def deliver(
        self, timer_id: uuid.UUID, context: DeliveryContext
    ) -> str | DeliveryResult | None:
        broker_url = context.task_broker_url
        if not broker_url:  # never Celery's default broker
            return DeliveryResult(CALLBACKS_OFF, retryable=False)
        publisher: Publisher = context.resource(
            "celery-publisher", lambda: Publisher(broker_url, context.timeout), _close_publisher
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + context.timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    reason = await publisher.publish(self, timer_id)
            except TimeoutError:
                reason = "the broker did not answer"
            if reason is None:
                return None
            if loop.time() + RETRY_EVERY > deadline:
                return f"could not publish the task within {context.timeout:g}s: {reason}"
            await asyncio.sleep(RETRY_EVERY)


CALLBACKS_OFF = "celery callbacks are off: set TIMERS_TASK_BROKER_URL"


def json_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON (as a message carries it, give or take)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


@functools.lru_cache(maxsize=4096)
def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether `name` matches one of the globs (answers remembered: a worker checks the same
    few task and queue names at every delivery)."""
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def _permit(callback: CeleryCallback, rules: CallbackRules, field_prefix: str) -> None:
    """Refuse a task or queue off the allow-lists, or one never reachable whatever they say."""
    if not rules.task_broker:
        raise InvalidField("callback_type", CALLBACKS_OFF)
    if callback.task.startswith(RESERVED_TASKS):
        raise InvalidField(
            f"{field_prefix}.task",
            "celery.* tasks are Celery's own and timers.* this service's: never sent",
        )
    if not _matches(callback.task, rules.celery_tasks):
        raise InvalidField(
            f"{field_prefix}.task", f"{callback.task!r} is not allowed by TIMERS_CELERY_TASKS"
        )
    queue = callback.queue or DEFAULT_QUEUE
    if _matches(queue, RESERVED_QUEUES):
        raise InvalidField(
            f"{field_prefix}.queue",
            f"{queue!r} is reserved (this service's queue, Celery's mailboxes or the broker's "
            "own keys)",
        )
    if not _matches(queue, rules.celery_queues):
        raise InvalidField(
            f"{field_prefix}.queue", f"{queue!r} is not allowed by TIMERS_CELERY_QUEUES"
        )


async def _close_publisher(publisher: Publisher) -> None:
    publisher.close()


def _parse(config: Any, field_name: str, policy: Any) -> CeleryCallback:
    return CeleryCallback.from_config(config, field_name)


KIND = Kind("celery", CeleryConfig, _parse, _permit)
