"""The pytest plugin for users (`timers.pytest_plugin`, registered through the `pytest11` entry
point) and its in-memory Timers with a hand-moved clock (`timers.memory`)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery

import timers.celery
from tests.support.processes import ROOT
from timers.memory import MemoryTimers
from timers.models import TimerStatus
from timers.storage import NewTimer

pytest_plugins = ["pytester"]


class Shop:
    """A user's Celery app: what its tasks ran, under which task id, at which clock time."""

    def __init__(self) -> None:
        self.app = Celery("shop", set_as_current=False)
        self.ran: list[tuple[str, Any, str]] = []
        self.timers: MemoryTimers | None = None
        shop = self

        @self.app.task(name="shop.expire_order", bind=True, shared=False)
        def expire_order(task: Any, order_id: int) -> None:
            shop.ran.append(("expire", order_id, task.request.id))

        @self.app.task(name="shop.remind", bind=True, shared=False)
        def remind(task: Any, times: int) -> None:
            assert shop.timers is not None
            shop.ran.append(("remind", shop.timers.now, task.request.id))
            if times > 1:  # the next reminder an hour after this one ran
                shop.timers.schedule(remind.s(times - 1), countdown=3600)

        @self.app.task(name="shop.broken", shared=False)
        def broken() -> None:
            raise RuntimeError("the task's own bug")

        self.expire_order, self.remind, self.broken = expire_order, remind, broken


@pytest.fixture
def shop() -> Shop:
    return Shop()


@pytest.fixture
def timers_celery_app(shop: Shop) -> Celery:
    return shop.app


@pytest.fixture
def mt(memory_timers: MemoryTimers, shop: Shop) -> MemoryTimers:
    shop.timers = memory_timers
    return memory_timers


def test_a_24_hour_timer_fires_once_when_the_clock_gets_there(mt: MemoryTimers, shop: Shop) -> None:
    timer = mt.schedule(shop.expire_order.s(42), countdown=24 * 3600)

    assert mt.advance(timedelta(hours=23, minutes=59, seconds=59)) == []
    assert shop.ran == []
    fired = mt.advance(1)
    assert [f.timer.id for f in fired] == [timer.id] and fired[0].ran
    assert shop.ran == [("expire", 42, str(timer.id))]  # task id = timer id
    assert mt.get(timer.id).status is TimerStatus.COMPLETED
    assert mt.advance(timedelta(days=30)) == []
    assert len(shop.ran) == 1


def test_canceled_or_postponed_timers_fire_as_they_now_say(mt: MemoryTimers, shop: Shop) -> None:
    canceled = mt.schedule(shop.expire_order.s(1), countdown=60)
    moved = mt.schedule(shop.expire_order.s(2), countdown=60)
    mt.cancel(canceled.id)
    mt.reschedule(moved.id, countdown=7200)

    mt.advance(3600)
    assert shop.ran == []
    mt.advance(3600)
    assert [order for _, order, _ in shop.ran] == [2]
    assert mt.get(canceled.id).status is TimerStatus.CANCELED


def test_timers_scheduled_by_fired_tasks_fire_from_their_own_fire_time(
    mt: MemoryTimers, shop: Shop
) -> None:
    start = mt.now
    mt.schedule(shop.remind.s(3), countdown=1800)

    fired = mt.advance(timedelta(hours=5))
    assert [at - start for _, at, _ in shop.ran] == [
        timedelta(minutes=30),
        timedelta(minutes=90),
        timedelta(minutes=150),
    ]
    assert len(fired) == 3 and mt.now == start + timedelta(hours=5)


def test_a_task_that_fails_raises_in_the_test_and_its_timer_counts_as_sent(
    mt: MemoryTimers, shop: Shop
) -> None:
    timer = mt.schedule(shop.broken.s(), countdown=10)
    with pytest.raises(RuntimeError, match="the task's own bug"):
        mt.advance(10)
    assert mt.get(timer.id).status is TimerStatus.COMPLETED  # as in the service: it was published


def test_without_the_task_in_the_app_the_call_is_recorded_only(mt: MemoryTimers) -> None:
    timer = mt.schedule("billing.charge", args=(9,), countdown=5)
    (fired,) = mt.advance(5)
    assert not fired.ran
    assert (fired.kind, fired.config["task"], fired.config["args"]) == (
        "celery",
        "billing.charge",
        [9],
    )
    assert mt.get(timer.id).status is TimerStatus.COMPLETED


def test_http_callbacks_are_recorded_or_answered_by_a_handler(mt: MemoryTimers) -> None:
    def http_timer(path: str) -> Any:
        config = {"type": "http", "url": f"https://shop.example/{path}", "payload": {"p": path}}
        return mt.store.create(NewTimer(mt.now + timedelta(seconds=5), "http", config, None))

    recorded = http_timer("recorded")
    (fired,) = mt.advance(5)
    assert fired.config["payload"] == {"p": "recorded"}
    assert mt.get(recorded.id).status is TimerStatus.COMPLETED

    mt.http_handler = lambda timer: 503
    refused = http_timer("refused")
    mt.advance(5)
    after = mt.get(refused.id)
    assert (after.status, after.last_error) == (TimerStatus.FAILED, "HTTP 503")
    assert [f.timer.id for f in mt.fired] == [recorded.id, refused.id]


def test_durable_eta_on_the_memory_timers(mt: MemoryTimers, shop: Shop) -> None:
    timers.celery.durable_eta(shop.app, threshold=60, timers=mt)
    result = shop.expire_order.apply_async((5,), countdown=24 * 3600)
    assert mt.get(result.id).status is TimerStatus.PENDING

    mt.advance(timedelta(days=1))
    assert shop.ran == [("expire", 5, result.id)]


def test_a_schedule_fires_each_slot_as_the_clock_passes_it(mt: MemoryTimers) -> None:
    config = {"type": "http", "url": "https://shop.example/report"}
    made = mt.create_schedule("http", config, every=600)
    fired = mt.advance(timedelta(hours=1))
    start = made.spec.timing.start_at
    assert [f.timer.scheduled_for for f in fired] == [
        start + timedelta(minutes=10 * k) for k in range(7)
    ]
    assert all(mt.get(f.timer.id).status is TimerStatus.COMPLETED for f in fired)
    assert mt.delete_schedule(made.id) == 2  # the two slots ahead


def test_the_clock_only_moves_forward(mt: MemoryTimers) -> None:
    with pytest.raises(ValueError, match="forward"):
        mt.advance(-1)


def test_a_users_project_gets_the_fixtures_from_the_installed_package(
    pytester: pytest.Pytester,
) -> None:
    # The example as a user's own test file, in a project of its own: no conftest, no import
    # of the plugin; the entry point brings the fixtures.
    shutil.copy(ROOT / "examples" / "testing" / "test_order_expiry.py", pytester.path)
    result = pytester.runpytest("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2)
