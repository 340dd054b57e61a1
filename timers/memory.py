"""`MemoryTimers`: the Python API (`timers.Timers`) on the in-memory store with a clock that moves
only when told to, for testing code that schedules timers. No PostgreSQL, no broker, no waiting:

    timers = MemoryTimers(celery_app=app)
    place_order(timers)                     # your code: timers.schedule(expire_order.s(42), …)
    timers.advance(timedelta(hours=24))     # fires what came due, in order of due time
    assert order_is_expired(42)

What is due fires as the real service fires it (claimed, delivered once, recorded): a `celery`
callback runs its task in this process (`task.apply`, with task id = timer id) when `celery_app`
has it registered, and is only recorded otherwise; an `http` callback is recorded, or handed to
`http_handler`, whose status decides the outcome; a `nats` callback is recorded. Every delivery is
in `fired`. Retry policies are not followed: a failed delivery fails its timer. A recurring
schedule (`create_schedule`) fires each slot, its next slot made as each one fires, as the
scheduler makes it.

The pytest plugin (`timers.pytest_plugin`) gives one as the `memory_timers` fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from timers.config import Settings
from timers.library import Timers
from timers.models import Timer
from timers.schedules.keeper import ScheduleKeeper
from timers.storage import Claim, Outcome
from timers.testing import InMemoryStore, ManualClock

# A task that schedules a timer due at once, which schedules another, …: stop somewhere.
MAX_ROUNDS = 1_000
DELIVERY_LEASE = 60.0


@dataclass(frozen=True)
class Fired:
    """One delivery: the timer as it was claimed, and whether its Celery task ran here."""

    timer: Timer
    ran: bool = False

    @property
    def kind(self) -> str:
        return self.timer.callback_type

    @property
    def config(self) -> Mapping[str, Any]:
        return self.timer.callback_config


# In a user's tests every task of the user's app may be scheduled (the reserved `celery.*` and
# `timers.*` names and queues stay refused, as in the service); nothing is published anywhere.
TEST_SETTINGS = Settings(task_broker_url="memory://", celery_tasks=("*",), celery_queues=("*",))


class MemoryTimers(Timers):
    def __init__(
        self,
        *,
        clock: ManualClock | None = None,
        celery_app: Any = None,
        http_handler: Callable[[Timer], int] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.manual_clock = clock or ManualClock(datetime.now(UTC))
        self.memory = InMemoryStore(self.manual_clock)
        super().__init__(
            store=self.memory, settings=settings or TEST_SETTINGS, clock=self.manual_clock
        )
        self.celery_app = celery_app
        self.http_handler = http_handler
        self.keeper = ScheduleKeeper(self.memory.schedules)
        self.fired: list[Fired] = []

    @property
    def now(self) -> datetime:
        return self.manual_clock()

    def advance(self, by: timedelta | float) -> list[Fired]:
        """Move the clock `by` (a timedelta or seconds), stopping at each timer that comes due on
        the way to fire it (so a timer scheduled by a fired task is due from its fire time);
        returns what fired, in order."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if step < timedelta(0):
            raise ValueError(f"the clock only moves forward, got {by!r}")
        target = self.now + step
        fired: list[Fired] = []
        for _ in range(MAX_ROUNDS):
            due = self.memory.load_near_term(None, target, limit=1).timers
            if not due:
                break
            self.manual_clock.now = max(self.now, due[0].execute_at)
            fired += self.fire_due()
        else:
            raise RuntimeError(f"still firing after {MAX_ROUNDS} rounds: timers that reschedule")
        self.manual_clock.now = target
        return fired

    def fire_due(self) -> list[Fired]:
        """Deliver every pending timer due now (the clock stays), oldest first; returns them."""
        fired: list[Fired] = []
        for _ in range(MAX_ROUNDS):
            due = [t.id for t in self.memory.load_near_term(None, self.now).timers]
            if not due:
                return fired
            claims = self.memory.claim_due(due)
            for claimed in claims:
                fired.append(self._deliver((claimed.id, claimed.claim)))
            self.keeper.after_claim(claims)  # the next slots of the schedules among them
        raise RuntimeError(f"still firing after {MAX_ROUNDS} rounds: timers due at once, again")

    def _deliver(self, claim: Claim) -> Fired:
        [timer] = self.memory.begin_deliveries([claim], DELIVERY_LEASE)
        task = None
        error = None
        if timer.callback_type == "celery" and self.celery_app is not None:
            task = self.celery_app.tasks.get(timer.callback_config["task"])
        elif timer.callback_type == "http" and self.http_handler is not None:
            status = self.http_handler(timer)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        # As in the service, a celery timer is completed once its task is published: the task's
        # own outcome belongs to Celery (and is raised here, to the test).
        self.memory.finish_many([Outcome(timer.id, timer.claims, error)])
        done = Fired(timer, ran=task is not None)
        self.fired.append(done)
        if task is not None:
            config = timer.callback_config
            task.apply(
                args=config.get("args", []),
                kwargs=config.get("kwargs", {}),
                task_id=str(timer.id),
                throw=True,
            )
        return done
