"""The `nats` callback kind: publish the payload as JSON to a NATS subject when the timer fires.

    {"type": "nats", "subject": "orders.expired", "payload": {"order": 42},
     "headers": {"tenant": "acme"}, "jetstream": false}

The message goes to the NATS server `TIMERS_NATS_URL` names, with the headers `Nats-Msg-Id` and
`X-Timer-Id` set to the timer id (after the timer's own headers, which can't replace them).

Whoever holds an API key chooses the subject and the headers, so some are never taken: subjects
starting with `$` (the server's and JetStream's own: `$JS.`, `$KV.`, `$O.`, `$SYS.`, …), `_INBOX.`
or `_R_.` (somebody's replies), and headers named `Nats-*` or `KV-*` (JetStream reads them as
instructions: expected stream, rollup, TTL, key-value operation). With `TIMERS_NATS_SUBJECTS`, a
subject must also start with one of its prefixes.

- `jetstream: false`: a core NATS publish, then a round trip to the server (flush). `completed`
  means the server took the message; it hands it to the subscribers it has at that moment and keeps
  nothing.
- `jetstream: true`: a JetStream publish that waits for the stream's acknowledgement. `completed`
  means a stream stored the message; a redelivered timer carries the same `Nats-Msg-Id`, so the
  stream's duplicate window (2 minutes by default) stores it once. No stream on the subject fails
  the timer.

mca-timer's `"topic": "orders", "key": "42"` publishes on `orders.42` (`orders` without a key) and,
with no payload or `null`, an empty message, as mca-timer did. `headers: null` means no headers.

Each worker process keeps one connection (`timers.callbacks.nats_connection`), made on first use
and reconnected by nats-py. A delivery waits for it within its own deadline
(`TIMERS_CALLBACK_TIMEOUT` for connecting, publishing and the flush or the ack); a server that is
down fails the timer with `NATS unavailable: …`. Nothing is buffered while disconnected, so a
timer reported failed is not published later behind its back.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from timers.callbacks.base import DeliveryContext, Kind
from timers.callbacks.http import HeaderName, HeaderValue
from timers.callbacks.nats_connection import NatsConnection, close_connection, reason_of
from timers.models import InvalidField, check_json

if TYPE_CHECKING:
    from timers.callbacks.rules import CallbackRules

MAX_SUBJECT_LENGTH = 255
# Visible ASCII but the token separator `.` and the wildcards `*` and `>`.
_TOKEN = r"[\x21-\x29\x2b-\x2d\x2f-\x3d\x3f-\x7e]+"
SUBJECT_PATTERN = rf"^{_TOKEN}(\.{_TOKEN})*$"
# Never published to: the server's own APIs and JetStream's (`$JS.`, `$JSC.`, `$KV.`, `$O.`,
# `$SYS.`, `$NRG.`, … all start with `$`) and reply subjects (`_INBOX.`, and `_R_.` for services).
RESERVED_SUBJECTS = ("$", "_INBOX.", "_R_.")
# Never taken from a timer (case-insensitive): JetStream reads them as instructions.
RESERVED_HEADERS = ("nats-", "kv-")
# RFC 9110 tokens (what nats-py sends as a header name) and values of visible ASCII, spaces, tabs.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
# Headers the delivery sets itself; a timer's own header of the same name is dropped (a
# `Nats-Msg-Id` of its own is refused before that, as every `Nats-*`).
CONTRACT_HEADERS = ("nats-msg-id", "x-timer-id")


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
        "wildcards (`*`, `>`); not starting with `$`, `_INBOX.` or `_R_.`; under one of the "
        "server's TIMERS_NATS_SUBJECTS prefixes when it has some.",
        examples=["orders.expired"],
    )
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict, description="Message headers; none named `Nats-*` or `KV-*`."
    )
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
        """Parse and validate a `callback_config` object; raise InvalidField naming the field."""
        if not isinstance(config, Mapping):
            raise InvalidField(field_prefix, "must be an object")
        known = {"type", "subject", "topic", "key", "headers", "payload", "jetstream"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise InvalidField(field_prefix, f"unknown field {unknown[0]!r}")
        if config.get("type") != "nats":
            raise InvalidField(
                f"{field_prefix}.type", f"must be 'nats', got {config.get('type')!r}"
            )
        subject, topic, key = _subject_of(config, field_prefix)
        headers = config.get("headers", {}) or {}
        if not isinstance(headers, Mapping):
            raise InvalidField(f"{field_prefix}.headers", "must be an object of strings")
        for name, value in headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise InvalidField(f"{field_prefix}.headers", f"invalid header name {name!r}")
            if name.lower().startswith(RESERVED_HEADERS):
                raise InvalidField(
                    f"{field_prefix}.headers.{name}",
                    "is reserved: Nats-* and KV-* headers are NATS's own (the timer id goes as "
                    "Nats-Msg-Id)",
                )
            if not isinstance(value, str):
                raise InvalidField(
                    f"{field_prefix}.headers.{name}", "header values must be strings"
                )
            if not _HEADER_VALUE.fullmatch(value):
                raise InvalidField(
                    f"{field_prefix}.headers.{name}",
                    "header values may hold only visible ASCII characters, spaces and tabs",
                )
        jetstream = config.get("jetstream", False)
        if not isinstance(jetstream, bool):
            raise InvalidField(f"{field_prefix}.jetstream", "must be true or false")
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
            "nats-connection", lambda: NatsConnection(context.nats_url), close_connection
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
        raise InvalidField(prefix, "give either subject or topic (with key), not both")
    topic, key = config.get("topic"), config.get("key")
    if not isinstance(topic, str) or not topic.strip():
        raise InvalidField(f"{prefix}.topic", "must not be empty, e.g. orders.expired")
    check_subject(topic, f"{prefix}.topic")
    if key is None:
        return topic, topic, None
    if not isinstance(key, str) or not key:
        raise InvalidField(f"{prefix}.key", "must be a non-empty string (or left out)")
    check_subject(f"{topic}.{key}", f"{prefix}.key")
    return f"{topic}.{key}", topic, key


def check_subject(subject: Any, field_name: str) -> None:
    """Raise InvalidField naming `field_name` unless `subject` is a subject one may publish to."""
    if not isinstance(subject, str) or not subject:
        raise InvalidField(field_name, "is required: a subject such as orders.expired")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise InvalidField(field_name, f"must be at most {MAX_SUBJECT_LENGTH} characters")
    if "*" in subject or ">" in subject:
        raise InvalidField(field_name, "must not contain wildcards (* or >)")
    if not re.fullmatch(SUBJECT_PATTERN, subject):
        raise InvalidField(
            field_name,
            "must be dot-separated tokens of visible ASCII characters, none empty, no spaces",
        )
    if subject.startswith(RESERVED_SUBJECTS):
        raise InvalidField(
            field_name,
            "is reserved: subjects starting with $ (the server's and JetStream's own), _INBOX. "
            "or _R_. (replies) are never published to",
        )


def message_headers(timer_id: uuid.UUID, callback: NatsCallback) -> dict[str, str]:
    headers = {
        name: value
        for name, value in callback.headers.items()
        if name.lower() not in CONTRACT_HEADERS
    }
    headers["Nats-Msg-Id"] = str(timer_id)
    headers["X-Timer-Id"] = str(timer_id)
    return headers


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
        return f"NATS error: {reason_of(exc)}"
    except nats.js.errors.NoStreamResponseError:
        return f"JetStream: no stream takes subject {callback.subject}"
    except nats.js.errors.APIError as exc:
        return f"JetStream: {exc.description or exc}"[:300]
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
        return _unavailable(connection, timeout)
    except nats.errors.Error as exc:
        return f"NATS error: {reason_of(exc)}"
    return None


def _unavailable(connection: NatsConnection, timeout: float) -> str:
    return f"NATS unavailable: {connection.where}: {connection.problem} (waited {timeout:g}s)"


def _parse(config: Any, field_name: str, policy: Any) -> NatsCallback:
    return NatsCallback.from_config(config, field_name)


def _permit(callback: NatsCallback, rules: CallbackRules, field_prefix: str) -> None:
    """With TIMERS_NATS_SUBJECTS, refuse a subject under none of its prefixes."""
    if rules.nats_subjects and not callback.subject.startswith(rules.nats_subjects):
        raise InvalidField(
            f"{field_prefix}.subject",
            f"{callback.subject!r} is under none of the prefixes TIMERS_NATS_SUBJECTS allows",
        )


KIND = Kind("nats", NatsConfig, _parse, _permit)
