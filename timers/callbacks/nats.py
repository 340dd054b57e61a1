"""The `nats` callback kind: publish the payload as JSON to a NATS subject when the timer fires.

    {"type": "nats", "subject": "orders.expired", "payload": {"order": 42},
     "headers": {"tenant": "acme"}, "jetstream": false}

The message goes to the NATS server `TIMERS_NATS_URL` names, with the headers `Nats-Msg-Id` and
`X-Timer-Id` set to the timer id (after the timer's own headers, which can't replace them).

- `jetstream: false`: a core NATS publish, then a round trip to the server (flush). `completed`
  means the server took the message; it hands it to the subscribers it has at that moment and keeps
  nothing.
- `jetstream: true`: a JetStream publish that waits for the stream's acknowledgement. `completed`
  means a stream stored the message; a redelivered timer carries the same `Nats-Msg-Id`, so the
  stream's duplicate window (2 minutes by default) stores it once. No stream on the subject fails
  the timer.

mca-timer's `"topic": "orders", "key": "42"` publishes on `orders.42` (`orders` without a key) and,
with no payload or `null`, an empty message, as mca-timer did. `headers: null` means no headers.

Each worker process keeps one connection, made on first use and reconnected by nats-py. A delivery
waits for it within its own deadline (`TIMERS_CALLBACK_TIMEOUT` for connecting, publishing and the
flush or the ack); a server that is down fails the timer with `NATS unavailable: …`. Nothing is
buffered while disconnected, so a timer reported failed is not published later behind its back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from timers.callbacks.http import HeaderName, HeaderValue
from timers.models import InvalidCallback, check_json

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

    from timers.callbacks import DeliveryContext

log = logging.getLogger(__name__)

MAX_SUBJECT_LENGTH = 255
# Visible ASCII but the token separator `.` and the wildcards `*` and `>`.
_TOKEN = r"[\x21-\x29\x2b-\x2d\x2f-\x3d\x3f-\x7e]+"
SUBJECT_PATTERN = rf"^{_TOKEN}(\.{_TOKEN})*$"
# The server's own APIs (JetStream, system account, Raft): a timer publishes to applications.
SYSTEM_SUBJECTS = ("$JS", "$JSC", "$SYS", "$NRG")
# RFC 9110 tokens (what nats-py sends as a header name) and values of visible ASCII, spaces, tabs.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
# Headers the delivery sets itself; a timer's own header of the same name is dropped.
CONTRACT_HEADERS = ("nats-msg-id", "x-timer-id")
RECONNECT_WAIT = 1.0  # seconds between attempts to reach the server while it is away
CONNECT_TIMEOUT = 2.0  # seconds one attempt to connect may take


class NatsConfig(BaseModel):
    """Publish `payload` as JSON to the NATS subject `subject` with `headers`; through JetStream
    (waiting for the stream's acknowledgement) when `jetstream` is true. `Nats-Msg-Id` and
    `X-Timer-Id` are set to the timer id by the service."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["nats"]
    subject: str = Field(
        min_length=1,
        max_length=MAX_SUBJECT_LENGTH,
        pattern=SUBJECT_PATTERN,
        description="A subject to publish to: dot-separated tokens of visible ASCII, without "
        "wildcards (`*`, `>`); not under `$JS`, `$JSC`, `$SYS` or `$NRG`.",
        examples=["orders.expired"],
    )
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    payload: Any = Field(
        default=None,
        description="Any JSON, nested at most 32 levels, finite numbers, no NUL characters.",
    )
    jetstream: StrictBool = Field(
        default=False,
        description="Publish through JetStream and wait for a stream to store the message.",
    )


@dataclass(frozen=True)
class NatsCallback:
    """A message to `subject` carrying `payload` as JSON and `headers`."""

    kind = "nats"
    subject: str
    headers: Mapping[str, str] = field(default_factory=dict)
    payload: Any = None
    jetstream: bool = False
    # mca-timer's spelling, kept as given: `subject` is `topic.key` (or `topic`).
    topic: str | None = None
    key: str | None = None

    @classmethod
    def from_config(cls, config: Any, field_prefix: str = "callback_config") -> NatsCallback:
        """Parse and validate a `callback_config` object; raise InvalidCallback naming the field."""
        if not isinstance(config, Mapping):
            raise InvalidCallback(field_prefix, "must be an object")
        known = {"type", "subject", "topic", "key", "headers", "payload", "jetstream"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise InvalidCallback(field_prefix, f"unknown field {unknown[0]!r}")
        if config.get("type") != "nats":
            raise InvalidCallback(
                f"{field_prefix}.type", f"must be 'nats', got {config.get('type')!r}"
            )
        subject, topic, key = _subject_of(config, field_prefix)
        headers = config.get("headers", {}) or {}
        if not isinstance(headers, Mapping):
            raise InvalidCallback(f"{field_prefix}.headers", "must be an object of strings")
        for name, value in headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise InvalidCallback(f"{field_prefix}.headers", f"invalid header name {name!r}")
            if not isinstance(value, str):
                raise InvalidCallback(
                    f"{field_prefix}.headers.{name}", "header values must be strings"
                )
            if not _HEADER_VALUE.fullmatch(value):
                raise InvalidCallback(
                    f"{field_prefix}.headers.{name}",
                    "header values may hold only visible ASCII characters, spaces and tabs",
                )
        jetstream = config.get("jetstream", False)
        if not isinstance(jetstream, bool):
            raise InvalidCallback(f"{field_prefix}.jetstream", "must be true or false")
        payload = config.get("payload")
        check_json(payload, f"{field_prefix}.payload")
        return cls(subject, dict(headers), payload, jetstream, topic, key)

    def to_config(self) -> dict[str, Any]:
        where = {"subject": self.subject} if self.topic is None else {"topic": self.topic}
        if self.key is not None:
            where["key"] = self.key
        return {
            "type": "nats",
            **where,
            "headers": dict(self.headers),
            "payload": self.payload,
            "jetstream": self.jetstream,
        }

    def destination(self) -> str:
        # A worker process publishes every `nats` callback to the one server TIMERS_NATS_URL
        # names, over one connection: they share one cap.
        return "nats:TIMERS_NATS_URL"

    async def deliver(self, timer_id: uuid.UUID, context: DeliveryContext) -> str | None:
        connection: NatsConnection = context.resource(
            "nats-connection", lambda: NatsConnection(context.nats_url), _close_connection
        )
        return await publish(connection, timer_id, self, context.timeout)


def _subject_of(config: Mapping[str, Any], prefix: str) -> tuple[str, str | None, str | None]:
    """`subject`, or mca-timer's `topic.key` (`topic` when the key is absent or null) with both."""
    if "topic" not in config and "key" not in config:
        subject = config.get("subject")
        check_subject(subject, f"{prefix}.subject")
        assert isinstance(subject, str)
        return subject, None, None
    if "subject" in config:
        raise InvalidCallback(prefix, "give either subject or topic (with key), not both")
    topic, key = config.get("topic"), config.get("key")
    if not isinstance(topic, str) or not topic.strip():
        raise InvalidCallback(f"{prefix}.topic", "must not be empty, e.g. orders.expired")
    check_subject(topic, f"{prefix}.topic")
    if key is None:
        return topic, topic, None
    if not isinstance(key, str) or not key:
        raise InvalidCallback(f"{prefix}.key", "must be a non-empty string (or left out)")
    check_subject(f"{topic}.{key}", f"{prefix}.key")
    return f"{topic}.{key}", topic, key


def check_subject(subject: Any, field_name: str) -> None:
    """Raise InvalidCallback naming `field_name` unless `subject` is a subject one may publish to."""
    if not isinstance(subject, str) or not subject:
        raise InvalidCallback(field_name, "is required: a subject such as orders.expired")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise InvalidCallback(field_name, f"must be at most {MAX_SUBJECT_LENGTH} characters")
    if "*" in subject or ">" in subject:
        raise InvalidCallback(field_name, "must not contain wildcards (* or >)")
    if not re.fullmatch(SUBJECT_PATTERN, subject):
        raise InvalidCallback(
            field_name,
            "must be dot-separated tokens of visible ASCII characters, none empty, no spaces",
        )
    if subject.split(".", 1)[0] in SYSTEM_SUBJECTS:
        raise InvalidCallback(field_name, "is the NATS server's own API, not an application's")


def message_headers(timer_id: uuid.UUID, callback: NatsCallback) -> dict[str, str]:
    headers = {
        name: value
        for name, value in callback.headers.items()
        if name.lower() not in CONTRACT_HEADERS
    }
    headers["Nats-Msg-Id"] = str(timer_id)
    headers["X-Timer-Id"] = str(timer_id)
    return headers


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
            self.problem = _reason(exc)
            raise
        log.info("connected to NATS at %s", self.where)

    async def _on_error(self, exc: Exception) -> None:
        problem = _reason(exc)
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
                log.warning("closing the NATS connection failed: %s", _reason(exc))


async def _close_connection(connection: NatsConnection) -> None:
    await connection.close()


async def publish(
    connection: NatsConnection, timer_id: uuid.UUID, callback: NatsCallback, timeout: float
) -> str | None:
    """Publish `callback`'s message, all of it within `timeout` seconds (waiting for the
    connection included). Returns None once the server took it (plain: after a flush round trip)
    or a stream stored it (JetStream), else a short reason: `NATS unavailable: …`, `timeout after
    30s`, `JetStream: no stream takes subject …`, `JetStream: …`, `NATS error: …`."""
    import nats.errors
    import nats.js.errors

    if callback.payload is None and callback.topic is not None:
        body = b""  # what mca-timer published for a timer without a payload
    else:
        body = json.dumps(callback.payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = message_headers(timer_id, callback)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    published = False
    try:
        async with asyncio.timeout_at(deadline):
            client = await connection.ready()
            left = max(deadline - loop.time(), 0.001)
            if callback.jetstream:
                published = True
                await connection.jetstream(client).publish(
                    callback.subject, body, timeout=left, headers=headers
                )
            else:
                await client.publish(callback.subject, body, headers=headers)
                published = True
                await client.flush(timeout=left)  # type: ignore[arg-type]
    except (TimeoutError, ConnectionError, nats.errors.OutboundBufferLimitError) as exc:
        if not published or not connection.connected:
            return _unavailable(connection, timeout)
        if isinstance(exc, TimeoutError):
            waited = "JetStream acknowledgement" if callback.jetstream else "flush"
            return f"timeout after {timeout:g}s (waiting for the {waited})"
        return f"NATS error: {_reason(exc)}"
    except nats.js.errors.NoStreamResponseError:
        return f"JetStream: no stream takes subject {callback.subject}"
    except nats.js.errors.APIError as exc:
        return f"JetStream: {exc.description or exc}"[:300]
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
        return _unavailable(connection, timeout)
    except nats.errors.Error as exc:
        return f"NATS error: {_reason(exc)}"
    return None


def _unavailable(connection: NatsConnection, timeout: float) -> str:
    return f"NATS unavailable: {connection.where}: {connection.problem} (waited {timeout:g}s)"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _parse(config: Any, field_name: str, policy: Any) -> NatsCallback:
    return NatsCallback.from_config(config, field_name)


def _kind() -> Any:
    from timers.callbacks import Kind

    return Kind("nats", NatsConfig, _parse)


KIND = _kind()
