"""Durable eta for a Celery app, through each of the three paths: the REST client, the Python API
(also inside the caller's own transaction) and the drop-in `durable_eta`. A separate user
application (examples/durable_eta/shop.py: its own module, broker and queue) runs in a `celery worker`
subprocess of its own; the timers worker, scheduler and API run as shipped. Real PostgreSQL and
Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

import timers.celery
from examples.durable_eta import shop
from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.receiver import wait_until
from tests.support.services import API_KEY, Services
from tests.support.timers import write_directly
from timers.api import create_app
from timers.client import Client
from timers.config import settings_from_env
from timers.embedded import free_port
from timers.errors import InvalidTimer
from timers.library import Timers
from timers.models import TimerStatus
from timers.store import TimerStore, database_engine

DUE_IN = 2.0
WAIT = 20.0


@pytest.fixture(scope="module")
def world(services: Services, template_database: str) -> Iterator[dict[str, str]]:
    name = create_database(services, template_database)
    timers_broker, shop_broker = services.redis_database(5), services.redis_database(6)
    for url in (timers_broker, shop_broker):
        redis.Redis.from_url(url).flushdb()
    yield {
        "DATABASE_URL": services.database_url(name),
        "REDIS_URL": timers_broker,
        "TIMERS_TASK_BROKER_URL": shop_broker,
        "TIMERS_CELERY_TASKS": "shop.tasks.*",
        "TIMERS_CELERY_QUEUES": "shop,celery",
        "SHOP_BROKER_URL": shop_broker,
        "API_KEY": API_KEY,
    }
    for url in (timers_broker, shop_broker):
        redis.Redis.from_url(url).flushdb()
    drop_database(services, name)


@pytest.fixture(scope="module")
def timers_stack(world: dict[str, str]) -> Iterator[None]:
    worker = processes.worker(world)
    scheduler = processes.scheduler(world)
    try:
        assert worker.wait_for_output("ready", 60), worker.output()
        assert scheduler.wait_for_output("scheduler started", 30), scheduler.output()
        yield
    finally:
        scheduler.stop()
        worker.stop()


def shop_worker(world: dict[str, str]) -> processes.Process:
    proc = processes.Process(
        "shop-worker",
        [
            str(processes.BIN / "celery"),
            "-A",
            "examples.durable_eta.shop",
            "worker",
            "-Q",
            "shop",
            "--loglevel=INFO",
            "-n",
            f"shop-{uuid.uuid4().hex[:8]}@%h",
        ],
        world,
    )
    assert proc.wait_for_output("ready", 60), proc.output()
    return proc


@pytest.fixture(scope="module")
def shop_app(world: dict[str, str]) -> Iterator[Any]:
    shop.app.conf.broker_url = world["SHOP_BROKER_URL"]
    shop.redis_client.cache_clear()
    yield shop.app


@pytest.fixture
def api(world: dict[str, str], timers_stack: None) -> Iterator[Timers]:
    library = Timers(settings=settings_from_env(world))
    with library.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("TRUNCATE timers"))
    redis.Redis.from_url(world["SHOP_BROKER_URL"]).delete(shop.RUNS)
    yield library
    library.close()


@pytest.fixture
def running_shop(world: dict[str, str], shop_app: Any, api: Timers) -> Iterator[processes.Process]:
    proc = shop_worker(world)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api_server(world: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = processes.Process(
        "api",
        [str(processes.BIN / "timers"), "api", "--host", "127.0.0.1", "--port", str(port)],
        world,
    )
    try:
        assert proc.wait_for_output("Application startup complete", 30), proc.output()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture
def client(api_server: str, api: Timers) -> Iterator[Client]:
    """The REST client, over HTTP, against the `timers api` command."""
    with Client(api_server, API_KEY) as rest:
        yield rest


def runs_of(timer_id: object) -> list[dict[str, Any]]:
    return [run for run in shop.runs() if run["task_id"] == str(timer_id)]


def ran_once_on_time(api: Timers, timer_id: object) -> dict[str, Any]:
    assert wait_until(lambda: runs_of(timer_id), WAIT), f"task {timer_id} never ran"
    time.sleep(1)  # a second run would show up by now
    [run] = runs_of(timer_id)
    timer = api.get(str(timer_id))
    assert timer.status is TimerStatus.COMPLETED, timer
    assert run["at"] >= timer.execute_at.timestamp()  # never early
    return run


def test_the_rest_client_schedules_a_task_that_runs_once_under_the_timer_id(
    client: Client, api: Timers, running_shop: processes.Process
) -> None:
    timer = client.schedule(
        "shop.tasks.expire_order", args=[1], kwargs={"reason": "unpaid"}, queue="shop",
        countdown=DUE_IN,
    )  # fmt: skip
    run = ran_once_on_time(api, timer.id)
    assert run["args"] == [1] and run["reason"] == "unpaid"


def test_the_python_api_schedules_a_signature(api: Timers, running_shop: processes.Process) -> None:
    timer = api.schedule(shop.expire_order.s(2, reason="late"), countdown=DUE_IN)
    assert timer.callback_config["queue"] == "shop"  # where the app routes the task
    run = ran_once_on_time(api, timer.id)
    assert run["args"] == [2] and run["reason"] == "late"


def test_the_drop_in_turns_a_long_countdown_into_a_durable_timer(
    api: Timers, running_shop: processes.Process, shop_app: Any
) -> None:
    timers.celery.durable_eta(shop_app, threshold=1, timers=api)
    result = shop.expire_order.apply_async((3,), {"reason": "expired"}, countdown=DUE_IN)
    timer = api.get(result.id)  # the AsyncResult's id is the timer's
    assert timer.status is TimerStatus.PENDING and timer.callback_type == "celery"
    run = ran_once_on_time(api, result.id)
    assert run["args"] == [3] and run["reason"] == "expired"


def test_canceled_through_each_path_never_runs(
    client: Client, api: Timers, running_shop: processes.Process, shop_app: Any
) -> None:
    timers.celery.durable_eta(shop_app, threshold=1, timers=api)
    by_client = client.schedule("shop.tasks.expire_order", args=[4], countdown=DUE_IN)
    by_api = api.schedule(shop.expire_order.s(5), countdown=DUE_IN)
    by_drop_in = shop.expire_order.apply_async((6,), countdown=DUE_IN)
    client.cancel(by_client.id)
    api.cancel(by_api.id)
    timers.celery.cancel(by_drop_in, timers=api)
    sentinel = api.schedule(shop.expire_order.s(7), countdown=DUE_IN + 0.5)
    ran_once_on_time(api, sentinel.id)
    for timer_id in (by_client.id, by_api.id, by_drop_in.id):
        assert runs_of(timer_id) == []
        assert api.get(str(timer_id)).status is TimerStatus.CANCELED


def test_rescheduled_runs_at_the_new_time_only(
    client: Client, api: Timers, running_shop: processes.Process, shop_app: Any
) -> None:
    timers.celery.durable_eta(shop_app, threshold=1, timers=api)
    by_drop_in = shop.expire_order.apply_async((13,), countdown=DUE_IN)
    by_api = api.schedule(shop.expire_order.s(8), countdown=DUE_IN)
    by_client = client.schedule("shop.tasks.expire_order", args=[9], queue="shop", countdown=DUE_IN)
    later = datetime.now(UTC) + timedelta(seconds=DUE_IN + 2)
    api.reschedule(by_api.id, eta=later)
    api.reschedule(by_drop_in.id, eta=later)
    client.reschedule(by_client.id, eta=later)
    for timer_id in (by_api.id, by_client.id, by_drop_in.id):
        run = ran_once_on_time(api, timer_id)
        assert run["at"] >= later.timestamp()


def sqlalchemy_transaction(url: str) -> Callable[[bool, Callable[[Any], Any]], Any]:
    def run(commit: bool, work: Callable[[Any], Any]) -> Any:
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
        try:
            with engine.connect() as conn:
                transaction = conn.begin()
                made = work(conn)
                conn.execute(text("SELECT 1"))  # the caller's own work in the same transaction
                transaction.commit() if commit else transaction.rollback()
                return made
        finally:
            engine.dispose()

    return run


def psycopg2_transaction(url: str) -> Callable[[bool, Callable[[Any], Any]], Any]:
    def run(commit: bool, work: Callable[[Any], Any]) -> Any:
        conn = psycopg2.connect(url)
        try:
            made = work(conn)
            conn.commit() if commit else conn.rollback()
            return made
        finally:
            conn.close()

    return run


@pytest.mark.parametrize("driver", [sqlalchemy_transaction, psycopg2_transaction])
def test_a_timer_scheduled_in_a_transaction_exists_only_if_it_commits(
    world: dict[str, str],
    api: Timers,
    running_shop: processes.Process,
    driver: Callable[[str], Callable[[bool, Callable[[Any], Any]], Any]],
) -> None:
    transaction = driver(world["DATABASE_URL"])

    def schedule(order: int) -> Callable[[Any], Any]:
        return lambda conn: api.schedule(
            shop.expire_order.s(order), countdown=DUE_IN, connection=conn
        )

    rolled_back = transaction(False, schedule(10))
    committed = transaction(True, schedule(11))
    run = ran_once_on_time(api, committed.id)
    assert run["args"] == [11]
    assert api.store.find(rolled_back.id) is None
    assert runs_of(rolled_back.id) == []


def test_a_task_due_while_the_users_worker_is_down_runs_when_it_is_back(
    world: dict[str, str], api: Timers, shop_app: Any
) -> None:
    timer = api.schedule(shop.expire_order.s(12), countdown=1)
    # Published on time into the user's queue, where it waits for a worker.
    assert wait_until(lambda: api.get(timer.id).status is TimerStatus.COMPLETED, WAIT)
    assert runs_of(timer.id) == []
    worker = shop_worker(world)
    try:
        assert wait_until(lambda: runs_of(timer.id), WAIT)
        time.sleep(1)
        assert len(runs_of(timer.id)) == 1
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"type": "celery", "task": "shop.tasks.x", "unknown": 1}, "callback_config"),
        ({"type": "celery", "task": "not a task name!"}, "callback_config.task"),
        ({"type": "celery", "task": "shop.x", "args": {"a": 1}}, "callback_config.args"),
        ({"type": "celery", "task": "shop.x", "kwargs": [1]}, "callback_config.kwargs"),
        (
            {"type": "celery", "task": "shop.x", "kwargs": {"not-a-name": 1}},
            "callback_config.kwargs",
        ),
        ({"type": "celery", "task": "shop.x", "queue": "a queue"}, "callback_config.queue"),
        ({"type": "celery", "task": "shop.x", "priority": 256}, "callback_config.priority"),
        (
            {"type": "celery", "task": "shop.x", "headers": {"id": "x"}},
            "callback_config.headers.id",
        ),
        ({"type": "celery"}, "callback_config.task"),
    ],
)
def test_bad_task_configs_are_refused_and_nothing_is_stored(
    world: dict[str, str], config: dict[str, Any], field: str
) -> None:
    settings = settings_from_env(world)
    store = TimerStore(database_engine(world["DATABASE_URL"]))
    before = store.page().total
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with TestClient(create_app(settings, store=store), headers={"X-API-Key": API_KEY}) as http:
        body = {"execute_at": at, "callback_type": "celery", "callback_config": config}
        response = http.post("/timers", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 2
    assert response.json()["message"].startswith(field), response.json()["message"]
    assert store.page().total == before
    store.engine.dispose()


def test_the_python_api_refuses_what_is_not_json_and_stores_nothing(api: Timers) -> None:
    before = api.store.page().total
    for call in (
        lambda: api.schedule("shop.tasks.expire_order", args=[object()], countdown=5),
        lambda: api.schedule("shop.tasks.expire_order", kwargs={"at": datetime.now(UTC)}),
        lambda: api.schedule("not a task", countdown=5),
        lambda: api.schedule("shop.x", eta=datetime(2030, 1, 1)),  # naive  # noqa: DTZ001
        lambda: api.schedule("shop.x", countdown=-60),
        lambda: api.schedule("shop.x", eta=datetime.now(UTC), countdown=5),
    ):
        with pytest.raises(InvalidTimer):
            call()
    assert api.store.page().total == before


def test_the_python_api_applies_the_allow_lists_and_stores_nothing(
    world: dict[str, str], api: Timers
) -> None:
    before = api.store.page().total
    for call, field in (
        (lambda: api.schedule("billing.charge", queue="shop", countdown=5), "callback_config.task"),
        (lambda: api.schedule("celery.backend_cleanup", countdown=5), "callback_config.task"),
        (lambda: api.schedule("timers.execute_callbacks", countdown=5), "callback_config.task"),
        (lambda: api.schedule(shop.expire_order.s(1), queue="other"), "callback_config.queue"),
        (lambda: api.schedule(shop.expire_order.s(1), queue="timers"), "callback_config.queue"),
        (lambda: api.schedule(shop.expire_order.s(1), queue="unacked"), "callback_config.queue"),
        (lambda: api.schedule(shop.expire_order.s("x" * 33_000)), "callback_config"),
    ):
        with pytest.raises(InvalidTimer) as info:
            call()
        assert str(info.value).startswith(f"{field}: "), info.value
    assert api.store.page().total == before
    off = Timers(settings=settings_from_env({"DATABASE_URL": world["DATABASE_URL"]}))
    try:
        with pytest.raises(InvalidTimer, match="celery callbacks are off"):
            off.schedule(shop.expire_order.s(1), countdown=5)
    finally:
        off.close()


def test_a_task_written_outside_the_allow_lists_fails_in_the_worker_and_is_never_published(
    world: dict[str, str], api: Timers
) -> None:
    # Straight into the table, as a direct writer (or an older version) could: the worker checks
    # the stored config against the same rules before it publishes anything.
    shop_broker = redis.Redis.from_url(world["SHOP_BROKER_URL"])
    queues = ("celery", "elsewhere", "timers", "unacked_spare", "_kombu.binding.spare")
    shop_broker.delete(*queues)
    configs: list[dict[str, Any]] = [
        {"type": "celery", "task": "billing.charge", "args": [1]},  # not in TIMERS_CELERY_TASKS
        {"type": "celery", "task": "celery.backend_cleanup"},  # Celery's own
        {"type": "celery", "task": "timers.execute_callbacks", "args": [[]]},  # ours
        *(
            {"type": "celery", "task": "shop.tasks.expire_order", "args": [1], "queue": queue}
            for queue in queues[1:]  # not in TIMERS_CELERY_QUEUES, or reserved
        ),
        {"type": "celery", "task": "shop.tasks.expire_order", "args": ["x" * 33_000]},
    ]
    ids = write_directly(api.store.engine, "celery", configs)  # type: ignore[attr-defined]
    finished = {TimerStatus.COMPLETED, TimerStatus.FAILED}
    assert wait_until(lambda: all(api.get(i).status in finished for i in ids), WAIT)
    for timer_id in ids:
        timer = api.get(timer_id)
        assert timer.status is TimerStatus.FAILED, timer
        assert (timer.last_error or "").startswith("invalid callback_config: callback_config"), (
            timer.last_error
        )
    time.sleep(1)  # a message published late would be there by now
    assert [q for q in queues if shop_broker.exists(q)] == []
    assert all(runs_of(i) == [] for i in ids)
