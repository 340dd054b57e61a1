"""The delivery engine of one worker process: an asyncio loop on a thread of its own that runs every
callback this process has started, concurrently.

Why this design: a callback is almost all waiting (connect, send, wait for the receiver). If each
one held a Celery pool slot, a handful of receivers that hang would hold every slot and every other
timer would queue behind them. Here the Celery task only starts deliveries (one statement) and
hands them to this loop, so its slot is free again in milliseconds; a delivery in flight costs a
coroutine and a socket, not a slot. This is what `celery -A timers.celery_app worker` gives with no
flags (the default prefork pool: each pool process has its own engine), with no monkey-patching and
the same synchronous psycopg2 store as everywhere else (outcomes are written by the
`OutcomeRecorder` thread, never on the loop).

Limits, all per worker process:
- at most `max_per_destination` deliveries at once to one receiver (for HTTP: scheme, host and
  port, and also the address and port the host resolved to, see `timers.worker.destinations`; for
  NATS: the server): one slow receiver cannot take every connection; its other timers wait their
  turn (their leases are renewed meanwhile, and their deadline starts when they are sent). Celery
  tasks share one cap of their own, two publishing batches (`timers.callbacks.celery`): they all
  go through the process's one publisher;
- at most `MAX_IN_FLIGHT` deliveries in all; past that, starting more blocks the task (backpressure
  to the broker instead of unbounded memory);
- each delivery has one deadline (`context.timeout`), kept by its kind (see `timers.callbacks`).

Each stored config is parsed again, with the deployment's `CallbackRules`, before it is delivered:
one that breaks them (written straight into the table, or stored before the rules changed) fails
with `invalid callback_config: …` and is never sent.

Any exception a delivery raises fails that timer alone, with the exception in `last_error`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from timers import callbacks
from timers.callbacks import CallbackRules, DeliveryContext
from timers.metrics import DeliveryMetrics
from timers.models import InvalidField, Timer
from timers.retries import DeliveryResult, RetryPolicy, next_delay
from timers.storage import Claim, Outcome, clip_error
from timers.worker.destinations import DestinationSlots, current_slots

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 10_000


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (a dependency except on Windows): its callbacks,
    tasks and sockets took a sixth off the worker's CPU per `http` delivery (bench.worker_cpu)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class DeliveryEngine:
    def __init__(
        self,
        *,
        max_per_destination: int,
        on_outcome: Callable[[Outcome], None],
        context: DeliveryContext,
        rules: CallbackRules,
        default_retry: RetryPolicy | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        metrics: DeliveryMetrics | None = None,
    ) -> None:
        self.context = context
        self.rules = rules
        self.metrics = metrics or DeliveryMetrics()
        self.default_retry = default_retry or RetryPolicy()
        self.max_per_destination = max_per_destination
        self.on_outcome = on_outcome
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._lock = threading.Lock()
        self._running: dict[uuid.UUID, int] = {}
        self._idle = threading.Condition(self._lock)
        self._loop = new_loop()
        self._destinations = DestinationSlots(max_per_destination)
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run_loop, name="delivery-engine", daemon=True)
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    # -- called from the task's thread ---------------------------------------------------------

    def submit(self, timers: Iterable[Timer]) -> None:
        """Deliver these started timers; returns at once unless MAX_IN_FLIGHT are running."""
        batch: list[Timer] = []
        try:
            for timer in timers:
                if not self._slots.acquire(blocking=not batch):
                    self._loop.call_soon_threadsafe(self._start, batch)  # those first, then wait
                    batch = []
                    self._slots.acquire()
                with self._lock:
                    self._running[timer.id] = timer.claims
                batch.append(timer)
        finally:
            # Every timer counted as running gets started, whatever interrupted the loop.
            if batch:
                self._loop.call_soon_threadsafe(self._start, batch)  # one wake-up of the loop

    def running(self) -> list[Claim]:
        """The claims being delivered right now (their leases need renewing)."""
        with self._lock:
            return list(self._running.items())

    def close(self, timeout: float) -> bool:
        """Let running deliveries finish for up to `timeout` seconds, then stop the loop; returns
        False if some were cut off (their leases lapse and recovery fires them again)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._running and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            drained = not self._running
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            future.result(timeout=5)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("the delivery loop did not shut down cleanly")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        return drained

    # -- on the loop ----------------------------------------------------------------------------

    def _start(self, timers: list[Timer]) -> None:
        for timer in timers:
            task = self._loop.create_task(self._deliver(timer))
            self._tasks.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._tasks.discard)

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not current:
                task.cancel()
        await self.context.close()

    async def _deliver(self, timer: Timer) -> None:
        started = datetime.now(UTC)
        clock = time.monotonic()
        self.metrics.in_flight.inc()
        try:
            result = await self._attempt(timer)
        except asyncio.CancelledError:
            # Shutting down: no outcome; the lease lapses and recovery fires the timer again.
            self.metrics.in_flight.dec()
            self._done(timer)
            raise
        except Exception as exc:
            # Whatever went wrong, it went wrong for this timer alone.
            log.exception("delivering timer %s raised", timer.id, extra={"timer_id": str(timer.id)})
            result = DeliveryResult(f"delivery error: {type(exc).__name__}: {exc}", retryable=False)
        took = time.monotonic() - clock
        self.metrics.in_flight.dec()
        outcome = self._outcome(timer, result, started, took)
        self.metrics.finished(
            timer.callback_type,
            outcome.entry["outcome"] if outcome.entry else "failed",
            outcome.late_ms / 1000,
            took,
        )
        self._done(timer, outcome)

    async def _attempt(self, timer: Timer) -> DeliveryResult:
        try:
            callback = callbacks.parse(timer.callback_type, timer.callback_config, rules=self.rules)
        except InvalidField as exc:
            return DeliveryResult(f"invalid callback_config: {exc}", retryable=False)
        with current_slots(self._destinations):
            async with self._destinations.take(callback.destination()):
                answer = await callback.deliver(timer.id, self.context.for_owner(timer.owner))
        if isinstance(answer, DeliveryResult):
            return answer
        return DeliveryResult(answer)  # a reason alone: worth trying again

    def _outcome(
        self, timer: Timer, result: DeliveryResult, started: datetime, took: float
    ) -> Outcome:
        """What follows an attempt: the next one (by the timer's retry policy, else the server's
        default), or the final status."""
        try:
            policy = RetryPolicy.from_config(timer.retry) if timer.retry else self.default_retry
        except InvalidField:
            policy = self.default_retry
        attempt = timer.delivery_attempts + 1
        retry_in = next_delay(policy, attempt, result)
        if result.error is None:
            outcome = "completed"
        else:
            outcome = "failed" if retry_in is None else "retrying"
        entry = {
            "attempt": attempt,
            "started_at": started.isoformat(),
            "duration_ms": round(took * 1000),
            "outcome": outcome,
            "status": result.status,
            "error": clip_error(result.error),
        }
        late = ((timer.started_at or timer.execute_at) - timer.execute_at).total_seconds() * 1000
        return Outcome(timer.id, timer.claims, result.error, retry_in, entry, late)

    def _done(self, timer: Timer, outcome: Outcome | None = None) -> None:
        if outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception:
                log.exception("handing over the outcome of timer %s failed", timer.id)
        with self._idle:
            self._running.pop(timer.id, None)
            if not self._running:
                self._idle.notify_all()
        self._slots.release()
