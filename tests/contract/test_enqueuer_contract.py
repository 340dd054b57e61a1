"""One suite, two enqueuers: `CeleryEnqueuer` on a real Redis of the test's own (which the suite
kills and restarts) and its twin `RecordingEnqueuer` must batch, refuse and recover alike."""

from __future__ import annotations

import base64
import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from tests.support.private_services import PrivateRedis
from timers.celery_app import create_celery_app
from timers.config import Settings
from timers.models import Claimed, uuid7
from timers.scheduler import Enqueuer
from timers.storage import Claim
from timers.testing import RecordingEnqueuer
from timers.worker.enqueuer import BATCH_TASK_NAME, CeleryEnqueuer


@dataclass
class Broker:
    enqueuer: Enqueuer
    queue_idle: Callable[[], bool]
    consume: Callable[[], None]
    messages: Callable[[], list[list[Claim]]]
    take_down: Callable[[], None]
    bring_back: Callable[[], None]


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(Path(tempfile.mkdtemp(prefix="timers-enqueuer-")))
    yield server
    server.kill()


@pytest.fixture(params=["celery", "recording"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    if request.param == "recording":
        twin = RecordingEnqueuer(per_task=2)

        def down() -> None:
            twin.down = True

        def up() -> None:
            twin.down = False

        yield Broker(twin, twin.queue_idle, twin.consume, lambda: twin.messages, down, up)
        return
    server: PrivateRedis = request.getfixturevalue("private_redis")
    if server.process is None:
        server.start()
    redis.Redis.from_url(server.url).flushall()
    app = create_celery_app(Settings(redis_url=server.url))
    enqueuer = CeleryEnqueuer(app, per_task=2)

    def messages() -> list[list[Claim]]:
        found = []
        for raw in reversed(redis.Redis.from_url(server.url).lrange("timers", 0, -1)):
            message = json.loads(raw)
            assert message["headers"]["task"] == BATCH_TASK_NAME
            claims = json.loads(base64.b64decode(message["body"]))[0][0]
            found.append([(uuid.UUID(i), int(a)) for i, a in claims])
        return found

    def consume() -> None:
        redis.Redis.from_url(server.url).delete("timers")

    yield Broker(enqueuer, enqueuer.queue_idle, consume, messages, server.kill, server.start)
    enqueuer.close()
    app.close()


def claimed(attempt: int = 1) -> Claimed:
    return Claimed(uuid7(), attempt, datetime.now(UTC))


def test_timers_travel_in_messages_of_up_to_per_task_claims(broker: Broker) -> None:
    timers = [claimed(), claimed(3), claimed()]
    assert broker.enqueuer.ready()
    assert broker.enqueuer.enqueue(timers) == []
    assert broker.messages() == [
        [(timers[0].id, 1), (timers[1].id, 3)],
        [(timers[2].id, 1)],
    ]


def test_the_queue_is_idle_only_when_no_message_waits(broker: Broker) -> None:
    assert broker.queue_idle() is True
    broker.enqueuer.enqueue([claimed()])
    assert broker.queue_idle() is False
    broker.consume()
    assert broker.queue_idle() is True
    broker.take_down()
    with pytest.raises(Exception):  # noqa: B017 - the recovery treats any failure as "busy"
        broker.queue_idle()
    broker.bring_back()


def test_a_broker_that_is_down_refuses_and_is_probed_until_it_is_back(broker: Broker) -> None:
    broker.take_down()
    timers = [claimed() for _ in range(3)]
    assert broker.enqueuer.enqueue(timers) == [t.id for t in timers]
    assert broker.enqueuer.ready() is False
    broker.bring_back()
    assert broker.enqueuer.ready() is True
    assert broker.enqueuer.enqueue(timers[:1]) == []
    assert broker.messages()[-1] == [(timers[0].id, 1)]
