"""Publishing Celery task messages for `celery` callbacks, in batches, off the delivery loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "celery"  # where Celery sends a task no route names
BATCH = 500  # messages per publishing batch (one Redis pipeline)


class TaskCall(Protocol):
    """What to publish: a task by name, its arguments, and where."""

    @property
    def task(self) -> str: ...
    @property
    def args(self) -> list[Any]: ...
    @property
    def kwargs(self) -> dict[str, Any]: ...
    @property
    def queue(self) -> str | None: ...
    @property
    def priority(self) -> int | None: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...


class Publisher:
    """A Celery app on the task broker, used only to publish, from one thread of its own (kombu's
    calls block, so they run off the delivery loop).

    Deliveries that come due together are published together: while one batch goes out, the next
    gathers, and each batch is built by Celery's own message functions (`create_task_message`,
    `send_task_message`, so the messages are what `send_task` makes) and sent through kombu's
    batch publishing where the transport has it (Redis: one pipeline per `BATCH` messages). A
    delivery that stopped waiting (its deadline passed) before its turn is not published.

    Each attempt makes one try to connect and gives up on a broker silent for `timeout` seconds,
    so the thread is never held for long by a broker that hangs."""

    def __init__(self, broker_url: str, timeout: float) -> None:
        from celery import Celery
        from celery.utils.nodenames import anon_nodename

        self.app: Celery = Celery("timers-publisher", broker=broker_url, set_as_current=False)
        conf = self.app.conf
        conf.task_serializer = "json"
        conf.broker_connection_retry_on_startup = False
        conf.broker_connection_timeout = timeout
        conf.broker_connection_max_retries = 0
        conf.broker_transport_options = {
            "max_retries": 0,  # kombu: one try to connect per attempt (the default is forever)
            "socket_connect_timeout": timeout,  # Redis
            "socket_timeout": timeout,
            "read_timeout": timeout,  # AMQP
            "write_timeout": timeout,
        }
        # Celery names the sender in each message (`origin`): this process, worked out once
        # (Celery asks the host name for every message).
        self.origin = anon_nodename()
        self._waiting: list[_Publication] = []
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="task-publisher", daemon=True)
        self._thread.start()

    async def publish(self, callback: TaskCall, timer_id: uuid.UUID) -> str | None:
        """Publish the task; None once the broker took it, else why not."""
        publication = _Publication(callback, timer_id, asyncio.get_running_loop().create_future())
        with self._ready:
            if self._closed:
                return "the publisher is closed"
            self._waiting.append(publication)
            self._ready.notify()
        try:
            return await publication.done
        except asyncio.CancelledError:
            # The delivery stopped waiting (its deadline): if not yet taken, it is never sent.
            with self._ready:
                publication.abandoned = True
            raise

    def _run(self) -> None:
        failing: str | None = None  # why the last batch raised, if it did
        while True:
            with self._ready:
                while not self._waiting and not self._closed:
                    self._ready.wait()
                if self._closed:
                    abandoned, self._waiting = self._waiting, []
                    _settle([(p, "the publisher is closed") for p in abandoned])
                    return
                taken, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
                # A publication whose delivery stopped waiting is dropped here, never sent late.
                batch = [p for p in taken if not p.abandoned]
            if batch:
                try:
                    reasons = self._publish(batch)
                    failing = None
                except Exception as exc:
                    # This batch's answer: the thread goes on, or every later task would wait in
                    # vain until the worker restarts. Logged once while it keeps failing alike.
                    reasons = [_reason(exc)] * len(batch)
                    if reasons[0] != failing:
                        log.exception("publishing %d tasks failed", len(batch))
                    failing = reasons[0]
                _settle(list(zip(batch, reasons, strict=True)))

    def _publish(self, batch: list[_Publication]) -> list[str | None]:
        """Publish these; for each, None if the broker took it, else the reason it did not."""
        amqp = self.app.amqp
        levels = self.app.conf.task_repr_maxlevels
        reasons: list[str | None] = []
        try:
            with self.app.producer_or_acquire() as producer, _batched(producer, len(batch)):
                # Each queue is declared with its batch's first message sent (`send_task`
                # declares it with every message: kombu remembers it per channel, but only
                # after a costly copy of the queue each time).
                declared: set[str] = set()
                for publication in batch:
                    callback, task_id = publication.callback, str(publication.timer_id)
                    message = amqp.create_task_message(
                        task_id,
                        callback.task,
                        callback.args,
                        callback.kwargs,
                        reply_to=self.app.thread_oid,
                        argsrepr=shown(callback.args, amqp.argsrepr_maxsize, levels),
                        kwargsrepr=shown(callback.kwargs, amqp.kwargsrepr_maxsize, levels),
                        origin=self.origin,
                    )
                    queue = callback.queue or DEFAULT_QUEUE
                    options: dict[str, Any] = {"queue": queue}
                    if queue in declared:
                        options["declare"] = []
                    if callback.priority is not None:
                        options["priority"] = callback.priority
                    if callback.headers:
                        options["headers"] = dict(callback.headers)
                    try:
                        amqp.send_task_message(
                            producer, callback.task, message, retry=False, **options
                        )
                    except Exception as exc:  # the broker refused it: retried by deliver
                        reasons.append(_reason(exc))
                    else:
                        declared.add(queue)  # once it was sent: a refused one declared nothing
                        reasons.append(None)
        except Exception as exc:  # no connection, or the batch could not be flushed
            return [_reason(exc)] * len(batch)
        return reasons

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join(timeout=1.0)
        self.app.close()


@dataclass(eq=False)
class _Publication:
    callback: TaskCall
    timer_id: uuid.UUID
    done: asyncio.Future[str | None]  # on the delivery's loop
    abandoned: bool = False  # its delivery stopped waiting (set under the publisher's lock)


def _settle(answers: list[tuple[_Publication, str | None]]) -> None:
    """Hand the answers to the loops their deliveries wait on: one wake-up per loop for a whole
    batch (a thread-safe future per message cost the loop more than the message itself)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[str | None], str | None]]]
    by_loop = {}
    for publication, reason in answers:
        by_loop.setdefault(publication.done.get_loop(), []).append((publication.done, reason))
    for loop, results in by_loop.items():
        # A closed loop: nobody waits for these any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_set_results, results)


def _set_results(results: list[tuple[asyncio.Future[str | None], str | None]]) -> None:
    for done, reason in results:
        if not done.done():  # not cancelled meanwhile
            done.set_result(reason)


def shown(value: list[Any] | dict[str, Any], limit: int, levels: int) -> str:
    """The arguments as Celery's `argsrepr`/`kwargsrepr` headers show them (Flower, the worker's
    log), exactly: Celery's `saferepr` (no arguments shown as `()`), which cost more than the rest
    of the message, so plain values nested at most `levels` deep, whose repr is the same and
    within `limit` characters, take the repr."""
    if not value:
        return "{}" if isinstance(value, dict) else "()"
    if _plain(value, levels):
        text = repr(value)
        if len(text) <= limit:
            return text
    from celery.utils.saferepr import saferepr

    return saferepr(value, limit, maxlevels=levels)


def _plain(value: Any, levels: int) -> bool:
    """Whether `saferepr` shows this container as `repr` does: numbers, booleans, None and
    printable ASCII strings without quotes or backslashes, nested at most `levels` deep."""
    if isinstance(value, dict):
        if not all(isinstance(key, str) and _plain_text(key) for key in value):
            return False
        items: Any = value.values()
    else:
        items = value
    for item in items:
        if isinstance(item, (list, dict)):
            if levels <= 1 or not _plain(item, levels - 1):
                return False
        elif isinstance(item, str):
            if not _plain_text(item):
                return False
        elif not (item is None or isinstance(item, (bool, int, float))):
            return False
    return True


def _plain_text(text: str) -> bool:
    return text.isascii() and text.isprintable() and "'" not in text and "\\" not in text


def _batched(producer: Any, size: int) -> AbstractContextManager[Any]:
    """kombu's batch publishing (5.7 and later), where the producer has it."""
    batch = getattr(producer, "batch", None)
    return batch(max_size=max(size, 1)) if batch is not None else nullcontext()


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
