"""A NATS subscriber and JetStream helpers for the tests: the real server, the real client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import nats
import nats.errors
from nats.aio.msg import Msg


@dataclass(frozen=True)
class Received:
    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _received(msg: Msg) -> Received:
    return Received(msg.subject, msg.data, dict(msg.headers or {}))


class Subscriber:
    """A core NATS subscription on a thread of its own, keeping every message it gets."""

    def __init__(self, url: str, subject: str) -> None:
        self.url = url
        self.subject = subject
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nats-subscriber", daemon=True)

    def __enter__(self) -> Subscriber:
        self._thread.start()
        assert self._ready.wait(10), "the subscriber did not connect"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            client = await nats.connect(self.url, allow_reconnect=False)

            async def keep(msg: Msg) -> None:
                with self._lock:
                    self.messages.append(_received(msg))

            await client.subscribe(self.subject, cb=keep)
            await client.flush()  # the server has the subscription before anyone publishes
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await client.drain()


@contextmanager
def stream(url: str, name: str, subjects: list[str]) -> Iterator[None]:
    """A JetStream stream on `subjects` for the duration of the block (deleted after)."""

    async def create() -> None:
        client = await nats.connect(url, allow_reconnect=False)
        try:
            await client.jetstream().add_stream(name=name, subjects=subjects)
        finally:
            await client.close()

    async def delete() -> None:
        client = await nats.connect(url, allow_reconnect=False)
        try:
            await client.jetstream().delete_stream(name)
        finally:
            await client.close()

    asyncio.run(create())
    try:
        yield
    finally:
        asyncio.run(delete())


def consume(url: str, name: str, subject: str) -> list[Received]:
    """Every message of stream `name` on `subject`, as a new pull consumer receives them."""

    async def main() -> list[Received]:
        client = await nats.connect(url, allow_reconnect=False)
        got: list[Received] = []
        try:
            consumer = await client.jetstream().pull_subscribe(subject, stream=name)
            while True:
                try:
                    batch = await consumer.fetch(batch=100, timeout=1)
                except nats.errors.TimeoutError:
                    return got
                for msg in batch:
                    got.append(_received(msg))
                    await msg.ack()
        finally:
            await client.close()

    return asyncio.run(main())
