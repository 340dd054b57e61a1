"""The Python API: durable Celery tasks (and timers) from your own code, written through the same
store as the REST API, with no HTTP hop.

    from timers import Timers

    timers = Timers.from_env()                      # DATABASE_URL, as every process reads it
    timer = timers.schedule(expire_order.s(42), countdown=24 * 3600)
    timers.reschedule(timer.id, eta=datetime(2030, 1, 1, tzinfo=UTC))
    timers.cancel(timer.id)

`schedule(…, connection=conn)` writes inside the caller's open transaction (a SQLAlchemy
`Connection` or a psycopg2 connection on the same database): committed, the timer exists and fires;
rolled back, it never existed. That is the outbox case, "when an order is created, expire it in
24 h", with no moment where the order exists and its timer does not.

When due, the task is published with task id = timer id (see `timers.callbacks.celery`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from timers.admission import admit, due_time
from timers.callbacks import CallbackRules
from timers.config import Settings, load_settings
from timers.errors import InvalidTimer
from timers.models import Timer, TimerStatus, utc_now
from timers.storage import Store, TimerFilter


def task_call(
    target: Any, args: Sequence[Any], kwargs: Mapping[str, Any] | None, queue: str | None
) -> tuple[str, list[Any], dict[str, Any], str | None]:
    """The task name, arguments and queue of a call to `target`: a Celery signature
    (`expire_order.s(42)`), a task (`expire_order`) or a task name (`"shop.expire_order"`). A
    signature's own arguments come first; without `queue`, a signature's or task's call goes where
    its app would route it (a bare name goes to Celery's default queue, `celery`)."""
    if isinstance(target, str):
        return target, list(args), dict(kwargs or {}), queue
    name = getattr(target, "task", None)
    if isinstance(name, str):  # a signature
        options = getattr(target, "options", {}) or {}
        task = _registered(target)
        return (
            name,
            [*getattr(target, "args", ()), *args],
            {**(getattr(target, "kwargs", {}) or {}), **(kwargs or {})},
            queue or options.get("queue") or routed_queue(task),
        )
    name = getattr(target, "name", None)
    if isinstance(name, str) and hasattr(target, "apply_async"):  # a task
        return name, list(args), dict(kwargs or {}), queue or routed_queue(target)
    raise InvalidTimer(f"target: a Celery signature, task or task name, got {target!r}")


def celery_config(
    target: Any,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    queue: str | None,
    priority: int | None,
    headers: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The `callback_config` of a `celery` timer calling `target` (see `task_call`)."""
    name, call_args, call_kwargs, call_queue = task_call(target, args, kwargs, queue)
    config: dict[str, Any] = {"type": "celery", "task": name, "args": call_args}
    config["kwargs"] = call_kwargs
    for key, value in (("queue", call_queue), ("priority", priority), ("headers", headers)):
        if value is not None:
            config[key] = dict(value) if isinstance(value, Mapping) else value
    return config


def _registered(signature: Any) -> Any:
    try:
        return signature.type
    except Exception:  # not registered in this process: no routing to follow
        return None


def routed_queue(task: Any) -> str | None:
    """The queue Celery would send this task to (its `queue`, `task_routes`, the app's default)."""
    if task is None:
        return None
    queue = getattr(task, "queue", None)
    if isinstance(queue, str) and queue:
        return queue
    try:
        route = task.app.amqp.router.route({}, task.name)
    except Exception:
        return None
    found = route.get("queue")
    name = getattr(found, "name", found)
    return name if isinstance(name, str) else None


class Timers:
    def __init__(
        self,
        database_url: str | None = None,
        *,
        store: Store | None = None,
        settings: Settings | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings or Settings(database_url=database_url)
        # The allow-lists of `celery` and `nats` callbacks, as the workers apply them (the
        # outbound policy of `http` URLs is left to delivery).
        self.rules = CallbackRules.from_settings(self.settings)
        self._owned = store is None
        if store is None:
            from timers.store import TimerStore, database_engine

            # No ping per checkout (it would double the round trips of a schedule call): a
            # connection that died is replaced, and the store's create is safe to send again.
            url = self.settings.require_database_url()
            store = TimerStore(database_engine(url, pool_pre_ping=False))
        self.store = store
        self.clock = clock

    @classmethod
    def from_env(cls) -> Timers:
        """Timers on the database the environment names (DATABASE_URL, or a .env file), within
        the allow-lists it gives the workers (TIMERS_TASK_BROKER_URL, TIMERS_CELERY_TASKS, …)."""
        return cls(settings=load_settings())

    def schedule(
        self,
        target: Any,
        *,
        eta: datetime | None = None,
        countdown: float | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        connection: Any = None,
    ) -> Timer:
        """A timer that publishes the Celery task `target` (a signature, a task or a task name)
        at `eta` (timezone-aware) or `countdown` seconds from now, with task id = timer id.
        With `connection`, written inside that open transaction. Raises InvalidTimer."""
        config = celery_config(target, args, kwargs, queue, priority, headers)
        return self._create("celery", config, eta, countdown, metadata, connection)

    def _create(
        self,
        callback_type: str,
        config: dict[str, Any],
        eta: datetime | None,
        countdown: float | None,
        metadata: Mapping[str, Any] | None,
        connection: Any,
    ) -> Timer:
        at = due_time(eta, countdown, self.clock(), timedelta(seconds=self.settings.max_delay))
        new = admit(
            execute_at=at,
            callback_type=callback_type,
            callback_config=config,
            rules=self.rules,
            metadata=metadata,
        )
        if connection is None:
            return self.store.create(new)
        create_in = getattr(self.store, "create_in", None)
        if create_in is None:
            raise TypeError("this store can't write inside a caller's transaction")
        timer: Timer = create_in(connection, new)
        return timer

    def get(self, timer_id: uuid.UUID | str) -> Timer:
        """Raises TimerNotFound."""
        return self.store.get(_uuid(timer_id))

    def cancel(self, timer_id: uuid.UUID | str) -> Timer:
        """`pending` → `canceled`; raises TimerNotFound or TimerNotPending."""
        return self.store.cancel(_uuid(timer_id))

    def reschedule(
        self,
        timer_id: uuid.UUID | str,
        *,
        eta: datetime | None = None,
        countdown: float | None = None,
    ) -> Timer:
        """Move a pending timer; raises InvalidTimer, TimerNotFound or TimerNotPending."""
        if eta is None and countdown is None:
            raise InvalidTimer("eta, countdown: give one of them")
        at = due_time(eta, countdown, self.clock(), timedelta(seconds=self.settings.max_delay))
        return self.store.update_pending(_uuid(timer_id), {"execute_at": at})

    def list(
        self,
        *,
        status: TimerStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
        sort: str = "created_at",
        order: str = "desc",
    ) -> list[Timer]:
        wanted = None if status is None else TimerStatus(status)
        page = self.store.page(
            where=TimerFilter(status=wanted),
            limit=limit,
            offset=offset,
            sort=sort,
            order=order,
            with_total=False,
        )
        return page.timers

    # -- recurring schedules (timers.schedules.api) -------------------------------------------

    @property
    def schedules(self) -> Any:
        """`timers.schedules.api.Schedules` on this store's schedules."""
        from timers.schedules.api import Schedules

        return Schedules(self.store.schedules, self.rules)

    def create_schedule(
        self, callback_type: str, callback_config: Mapping[str, Any], **options: Any
    ) -> Any:
        """A recurring schedule (`cron=` or `every=`, see `Schedules.create`)."""
        return self.schedules.create(callback_type, callback_config, now=self.clock(), **options)

    def get_schedule(self, schedule_id: uuid.UUID | str) -> Any:
        return self.schedules.get(_uuid(schedule_id))

    def delete_schedule(self, schedule_id: uuid.UUID | str) -> int:
        return int(self.schedules.delete(_uuid(schedule_id)))

    def close(self) -> None:
        engine = getattr(self.store, "engine", None)
        if self._owned and engine is not None:
            engine.dispose()

    def __enter__(self) -> Timers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _uuid(timer_id: uuid.UUID | str) -> uuid.UUID:
    try:
        return timer_id if isinstance(timer_id, uuid.UUID) else uuid.UUID(str(timer_id))
    except ValueError:
        raise InvalidTimer(f"timer id: {timer_id!r} is not a UUID") from None
