"""The connection of a worker process to the NATS server that `nats` callbacks
(`timers.callbacks.nats`) publish to."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

log = logging.getLogger(__name__)

RECONNECT_WAIT = 1.0  # seconds between attempts to reach the server while it is away
CONNECT_TIMEOUT = 2.0  # seconds one attempt to connect may take


class NatsConnection:
    """The connection of one worker process to its NATS server, made on first use (on the
    delivery loop) and then kept: nats-py reconnects it for as long as the process runs. Nothing
    is buffered while it is away (publishing then raises), so a message is sent only by a
    delivery that is still waiting for its outcome."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.servers = [part.strip() for part in url.split(",") if part.strip()]
        self.problem = "not connected yet"
        self.client: Client | None = None
        self._jetstream: JetStreamContext | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def where(self) -> str:
        """The servers as host:port, without credentials (for messages)."""
        shown = []
        for server in self.servers:
            try:
                parts = urlsplit(server if "://" in server else f"nats://{server}")
                shown.append(f"{parts.hostname}:{parts.port or 4222}")
            except ValueError:
                shown.append("an invalid URL")
        return ", ".join(shown) or "no server"

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.is_connected

    async def ready(self) -> Client:
        """The client once it is connected; waits as long as the caller lets it (cancel it)."""
        if self._connecting is None or (
            self._connecting.done()
            and (
                self._connecting.cancelled()
                or self._connecting.exception() is not None
                or self._is_closed()
            )
        ):
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        # Shielded: a delivery that gives up does not stop the attempt the others wait for.
        await asyncio.shield(self._connecting)
        while not self.connected:  # reconnecting after the server went away
            if self._is_closed():
                raise ConnectionError(self.problem)
            await asyncio.sleep(0.05)
        assert self.client is not None
        return self.client

    def jetstream(self, client: Client) -> JetStreamContext:
        if self._jetstream is None:
            self._jetstream = client.jetstream()
        return self._jetstream

    def _is_closed(self) -> bool:
        return self.client is not None and self.client.is_closed

    async def _connect(self) -> None:
        from nats.aio.client import Client

        self.client = client = Client()
        self._jetstream = None
        try:
            await client.connect(
                servers=self.servers,
                name="timers-worker",
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # for as long as the process runs
                reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]
                connect_timeout=CONNECT_TIMEOUT,  # type: ignore[arg-type]
                pending_size=0,  # no buffering while disconnected
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except Exception as exc:
            self.problem = reason_of(exc)
            raise
        log.info("connected to NATS at %s", self.where)

    async def _on_error(self, exc: Exception) -> None:
        problem = reason_of(exc)
        if problem != self.problem:
            log.warning("NATS at %s: %s", self.where, problem)
        self.problem = problem

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        self.problem = "disconnected, reconnecting"
        log.warning("disconnected from NATS at %s; reconnecting", self.where)

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS at %s", self.where)

    async def close(self) -> None:
        self._closing = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        client, self.client = self.client, None
        if client is not None and not client.is_closed:
            try:
                async with asyncio.timeout(2):
                    await client.close()
            except Exception as exc:
                log.warning("closing the NATS connection failed: %s", reason_of(exc))


async def close_connection(connection: NatsConnection) -> None:
    await connection.close()


def reason_of(exc: BaseException) -> str:
    """A short, one-line account of what went wrong with NATS."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
