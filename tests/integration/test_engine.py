"""The delivery engine on its own, against real receivers on 127.0.0.1 (no database: outcomes are
collected as the engine hands them over)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp.abc import AbstractResolver

from tests.support.receiver import Receiver, wait_until
from tests.support.services import TASK_BROKER_DATABASE, Services
from timers.callbacks import CallbackRules, DeliveryContext
from timers.callbacks.http import HttpCallback, deliver
from timers.callbacks.task_publisher import Publisher
from timers.models import Timer, TimerStatus, uuid7
from timers.outbound import GuardedResolver, Network, OutboundPolicy
from timers.worker.engine import DeliveryEngine, Outcome

LOCAL = OutboundPolicy(["127.0.0.0/8"])
RULES = CallbackRules()
SHOP = CallbackRules(task_broker=True, celery_tasks=("shop.tasks.*",), celery_queues=("celery",))


class WildcardDns(AbstractResolver):
    """A DNS server that answers every name with one address (`*.evil.test A 127.0.0.1`)."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        info = {"hostname": host, "host": self.address, "port": port, "family": socket.AF_INET}
        return [{**info, "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


class BehindWildcardDns(OutboundPolicy):
    """The shipped policy, with names resolved by a `WildcardDns`."""

    def __init__(self, address: str, allowed: tuple[Network | str, ...] = ()) -> None:
        super().__init__(allowed)
        self.address = address

    def resolver(self) -> GuardedResolver:
        guarded = GuardedResolver(self)
        guarded.inner = WildcardDns(self.address)  # type: ignore[assignment]
        return guarded


def started_timer(url: str, **config: Any) -> Timer:
    now = datetime.now(UTC)
    return Timer(
        id=uuid7(),
        execute_at=now,
        callback_type="http",
        callback_config={"type": "http", "url": url, **config},
        status=TimerStatus.EXECUTING,
        created_at=now,
        updated_at=now,
        claims=1,
        started_at=now,
    )


class Outcomes:
    def __init__(self) -> None:
        self.items: dict[str, Outcome] = {}
        self.lock = threading.Lock()

    def __call__(self, outcome: Outcome) -> None:
        with self.lock:
            self.items[str(outcome.timer_id)] = outcome

    def __len__(self) -> int:
        with self.lock:
            return len(self.items)


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    slow, fast = Receiver().start(), Receiver().start()
    yield slow, fast
    slow.stop()
    fast.stop()


def test_one_receiver_gets_at_most_the_cap_and_others_are_not_held_up(
    receivers: tuple[Receiver, Receiver],
) -> None:
    slow, fast = receivers
    outcomes = Outcomes()
    engine = DeliveryEngine(
        max_per_destination=3,
        on_outcome=outcomes,
        context=DeliveryContext(timeout=10, policy=LOCAL),
        rules=RULES,
    )
    try:
        engine.submit([started_timer(slow.url("/slow/0.5")) for _ in range(9)])
        quick = [started_timer(fast.url("/ok")) for _ in range(20)]
        engine.submit(quick)
        # The fast receiver's timers finish while the slow one still works through its queue.
        assert wait_until(lambda: all(str(t.id) in outcomes.items for t in quick), 5)
        assert len(outcomes) < 29
        assert wait_until(lambda: len(outcomes) == 29, 10)
    finally:
        engine.close(5)
    assert slow.max_concurrent == 3
    assert all(o.error is None for o in outcomes.items.values())


def test_running_lists_the_claims_in_flight_until_their_outcome_is_handed_over(
    receivers: tuple[Receiver, Receiver],
) -> None:
    slow, _ = receivers
    outcomes = Outcomes()
    engine = DeliveryEngine(
        max_per_destination=8,
        on_outcome=outcomes,
        context=DeliveryContext(timeout=10, policy=LOCAL),
        rules=RULES,
    )
    try:
        timers = [started_timer(slow.url("/slow/0.5")) for _ in range(3)]
        engine.submit(timers)
        assert sorted(engine.running()) == sorted((t.id, 1) for t in timers)
        assert wait_until(lambda: len(outcomes) == 3, 5)
        assert engine.running() == []
    finally:
        engine.close(5)


def test_close_lets_running_deliveries_finish(receivers: tuple[Receiver, Receiver]) -> None:
    slow, _ = receivers
    outcomes = Outcomes()
    engine = DeliveryEngine(
        max_per_destination=8,
        on_outcome=outcomes,
        context=DeliveryContext(timeout=10, policy=LOCAL),
        rules=RULES,
    )
    timer = started_timer(slow.url("/slow/0.5"))
    engine.submit([timer])
    assert engine.close(5) is True
    assert outcomes.items[str(timer.id)].error is None


def test_an_exception_inside_one_delivery_fails_that_timer_alone(
    receivers: tuple[Receiver, Receiver],
) -> None:
    _, fast = receivers
    outcomes = Outcomes()
    engine = DeliveryEngine(
        max_per_destination=8,
        on_outcome=outcomes,
        context=DeliveryContext(timeout=10, policy=LOCAL),
        rules=RULES,
    )

    # Something unforeseen raises inside one delivery (here: the policy check).
    class Unforeseen(OutboundPolicy):
        def check_url(self, url: str) -> None:
            if url.endswith("/poison"):
                raise RuntimeError("something nobody planned for")
            super().check_url(url)

    engine.context.policy = Unforeseen(["127.0.0.0/8"])
    poison = started_timer(fast.url("/poison"))
    healthy = [started_timer(fast.url("/ok")) for _ in range(5)]
    try:
        engine.submit([healthy[0], poison, *healthy[1:]])
        assert wait_until(lambda: len(outcomes) == 6, 10)
    finally:
        engine.close(5)
    error = outcomes.items[str(poison.id)].error or ""
    assert error == "delivery error: RuntimeError: something nobody planned for", error
    assert all(outcomes.items[str(t.id)].error is None for t in healthy)


def test_the_outbound_policy_is_applied_after_resolution_and_to_literals() -> None:
    outcomes = Outcomes()
    engine = DeliveryEngine(
        max_per_destination=8,
        on_outcome=outcomes,
        context=DeliveryContext(timeout=5, policy=OutboundPolicy()),
        rules=RULES,
    )
    by_name = started_timer("http://localhost:9/hook")  # resolved, then refused
    literal = started_timer("http://127.0.0.1:9/hook")
    legacy = started_timer("http://0x7f000001:9/hook")
    try:
        engine.submit([by_name, literal, legacy])
        assert wait_until(lambda: len(outcomes) == 3, 10)
    finally:
        engine.close(5)
    for timer in (by_name, literal, legacy):
        error = outcomes.items[str(timer.id)].error or ""
        assert error.startswith("blocked: "), error
        assert "loopback" in error, error


def test_the_cap_holds_per_address_whatever_names_lead_there(
    receivers: tuple[Receiver, Receiver],
) -> None:
    slow, _ = receivers
    outcomes = Outcomes()
    engine = DeliveryEngine(
        max_per_destination=2,
        on_outcome=outcomes,
        context=DeliveryContext(
            timeout=10, policy=BehindWildcardDns("127.0.0.1", ("127.0.0.0/8",))
        ),
        rules=RULES,
    )
    # Names a wildcard record sends to one address, and literals that spell that address.
    names = [f"a{i}.evil.test" for i in range(6)] + ["localhost", "127.0.0.1", "127.1"]
    timers = [
        started_timer(f"http://{name}:{slow.port}/slow/0.3") for name in names for _ in range(2)
    ]
    try:
        engine.submit(timers)
        assert wait_until(lambda: len(outcomes) == len(timers), 30)
    finally:
        engine.close(5)
    assert slow.max_concurrent == 2
    assert [o.error for o in outcomes.items.values()] == [None] * len(timers)
    # Each went to its own name (the Host header), by way of the one address.
    hosts = {a.headers["Host"] for a in slow.arrivals}
    assert hosts == {f"{name}:{slow.port}" for name in names}


def test_a_name_that_resolves_to_a_refused_address_does_not_say_which_address() -> None:
    outcomes = Outcomes()
    engine = DeliveryEngine(
        max_per_destination=8,
        on_outcome=outcomes,
        context=DeliveryContext(timeout=5, policy=BehindWildcardDns("10.1.2.3")),
        rules=RULES,
    )
    timer = started_timer("http://billing.internal.test/hook")
    try:
        engine.submit([timer])
        assert wait_until(lambda: len(outcomes) == 1, 10)
    finally:
        engine.close(5)
    error = outcomes.items[str(timer.id)].error or ""
    assert error == "blocked: billing.internal.test resolves to a refused (non-public) address", (
        error
    )
    assert "10.1.2.3" not in error and "private" not in error


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An https receiver on 127.0.0.1 whose certificate names only `hook.evil.test`: its port,
    and the certificate (the one authority a client trusts)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=hook.evil.test"]
        + ["-addext", "subjectAltName=DNS:hook.evil.test"],
        check=True,
        capture_output=True,
    )
    receiver = Receiver().start()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    yield receiver.port, cert
    receiver.stop()


def test_https_checks_the_certificate_against_the_host_not_the_address(
    tls_receiver: tuple[int, Path],
) -> None:
    port, cert = tls_receiver
    policy = BehindWildcardDns("127.0.0.1", ("127.0.0.0/8",))

    async def post(host: str) -> str | None:
        trusting = ssl.create_default_context(cafile=cert)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as session:
            callback = HttpCallback(f"https://{host}:{port}/hook")
            return (await deliver(session, uuid7(), callback, 5, policy)).error

    assert asyncio.run(post("hook.evil.test")) is None
    for other in ("other.evil.test", "127.0.0.1"):
        error = asyncio.run(post(other)) or ""
        assert error.startswith("TLS error: ") and "mismatch" in error, error


def test_a_task_the_broker_wont_take_fails_after_the_callback_timeout() -> None:
    outcomes = Outcomes()
    engine = DeliveryEngine(
        max_per_destination=8,
        on_outcome=outcomes,
        context=DeliveryContext(timeout=2, policy=LOCAL, task_broker_url="redis://127.0.0.1:1/0"),
        rules=SHOP,
    )
    timer = started_task()
    try:
        engine.submit([timer])
        assert wait_until(lambda: len(outcomes) == 1, 15)
    finally:
        engine.close(5)
    error = outcomes.items[str(timer.id)].error or ""
    assert error.startswith("could not publish the task within 2s: "), error


def started_task() -> Timer:
    now = datetime.now(UTC)
    return Timer(
        id=uuid7(),
        execute_at=now,
        callback_type="celery",
        callback_config={"type": "celery", "task": "shop.tasks.expire_order", "args": [1]},
        status=TimerStatus.EXECUTING,
        created_at=now,
        updated_at=now,
        claims=1,
        started_at=now,
    )


@contextmanager
def hung_broker() -> Iterator[str]:
    """A broker that takes connections and never answers a byte: the URL of a Redis on it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def take() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        stop.set()
        taker.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_a_broker_that_never_answers_fails_the_tasks_at_the_callback_timeout() -> None:
    timeout = 2
    outcomes = Outcomes()
    with hung_broker() as url:
        engine = DeliveryEngine(
            max_per_destination=16,
            on_outcome=outcomes,
            context=DeliveryContext(timeout=timeout, policy=LOCAL, task_broker_url=url),
            rules=SHOP,
        )
        tasks = [started_task() for _ in range(8)]  # more than one delivery at a time
        try:
            engine.submit(tasks)
            assert wait_until(lambda: len(outcomes) == len(tasks), 3 * timeout)
        finally:
            engine.close(5)
    for timer in tasks:
        error = outcomes.items[str(timer.id)].error or ""
        assert error.startswith(f"could not publish the task within {timeout}s: "), error


def test_celery_tasks_are_not_held_to_the_per_destination_cap(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap keeps one receiver from taking every connection; `celery` callbacks all go
    through the process's one publisher, in batches, so a cap would only shrink the batches (at
    the :00 herd, to 64 messages)."""
    url = services.redis_database(TASK_BROKER_DATABASE)
    batches: list[int] = []
    publish = Publisher._publish

    def recorded(self: Publisher, batch: Any) -> list[str | None]:
        batches.append(len(batch))
        return publish(self, batch)

    monkeypatch.setattr(Publisher, "_publish", recorded)
    outcomes = Outcomes()
    engine = DeliveryEngine(
        max_per_destination=2,
        on_outcome=outcomes,
        context=DeliveryContext(timeout=10, policy=LOCAL, task_broker_url=url),
        rules=SHOP,
    )
    tasks = [started_task() for _ in range(40)]
    try:
        engine.submit(tasks)
        assert wait_until(lambda: len(outcomes) == len(tasks), 20)
    finally:
        engine.close(5)
        redis.Redis.from_url(url).flushdb()
    assert [o.error for o in outcomes.items.values()] == [None] * len(tasks)
    assert sum(batches) == len(tasks) and max(batches) > 2, batches


def test_destination_is_scheme_host_and_port() -> None:
    def destination(url: str) -> str:
        return HttpCallback(url).destination()

    assert destination("http://Example.com/a") == "http://example.com:80"
    assert destination("https://example.com/a") == "https://example.com:443"
    assert destination("http://example.com:8080/a?b") == "http://example.com:8080"
    assert destination("http://[::1]:81/") == "http://::1:81"


def test_the_engine_runs_on_uvloop_where_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    engine = DeliveryEngine(
        max_per_destination=1, on_outcome=Outcomes(), context=DeliveryContext(5, LOCAL), rules=RULES
    )
    try:
        assert isinstance(engine._loop, uvloop.Loop)
    finally:
        engine.close(1)
