"""The `http` callback kind: POST the payload as JSON to a URL.

Checked at the API and again in the worker (`HttpCallback.from_config`); delivered by `deliver`, a
coroutine on an aiohttp session that never raises for anything a receiver or a stored config can
do. Its whole life (connect, send, wait, read) is bounded by one deadline, it reads at most
`MAX_RESPONSE_BYTES` of the answer, and it connects only where the outbound policy allows.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError
from yarl import URL

from timers import __version__
from timers.callbacks.base import DeliveryContext, Kind
from timers.callbacks.urls import MAX_URL_LENGTH, Route, destination, url_problem
from timers.models import InvalidField, check_json
from timers.outbound import Blocked, OutboundPolicy
from timers.retries import DeliveryResult, retryable_status
from timers.signing import SIGNATURE_HEADERS, signature_headers
from timers.worker.destinations import take_slot

# RFC 9110 token characters: what a header field name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# What a header value can carry on the wire as it is: visible ASCII, spaces and tabs.
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
HEADER_NAME_PATTERN = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"
HEADER_VALUE_PATTERN = r"^[\x20-\x7e\t]*$"
# Headers that frame the request or concern one connection: the HTTP client sets them, a timer
# can't.
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)

HeaderName = Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN, max_length=256)]
HeaderValue = Annotated[str, StringConstraints(pattern=HEADER_VALUE_PATTERN, max_length=8192)]


class HttpConfig(BaseModel):
    """POST `payload` as JSON to `url` with `headers`. Framing and hop-by-hop headers (`Host`,
    `Content-Length`, `Transfer-Encoding`, `Connection`, …) and the signature headers
    (`webhook-id`, `webhook-timestamp`, `webhook-signature`) can't be given; `Content-Type`,
    `User-Agent` and `X-Timer-Id` are set by the service."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["http"] = "http"
    url: str = Field(
        min_length=8,
        max_length=MAX_URL_LENGTH,
        pattern=r"^https?://[\x21-\x7e]+$",
        description="An absolute http:// or https:// URL without credentials, to a public "
        "address unless TIMERS_ALLOWED_NETWORKS opens more.",
        json_schema_extra={"format": "uri"},
        examples=["https://example.com/hook"],
    )
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    payload: Any = Field(
        default=None,
        description="Any JSON, nested at most 32 levels, finite numbers, no NUL characters.",
    )

    @field_validator("headers")
    @classmethod
    def _no_signature_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        # Refused here, at the API; a stored timer that has one (made before they were reserved,
        # or written directly) still fires: the delivery drops it.
        for name in headers:
            if name.lower() in SIGNATURE_HEADERS:
                raise PydanticCustomError(
                    "reserved_header",
                    "{name} is set by the service (it signs callbacks as Standard Webhooks do)",
                    {"name": name},
                )
        return headers


@dataclass(frozen=True)
class HttpCallback:
    """An HTTP POST of `payload` as JSON to `url` with `headers`."""

    kind = "http"
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    payload: Any = None

    @classmethod
    def from_config(cls, config: Any, field_prefix: str = "callback_config") -> HttpCallback:
        """Parse and validate a `callback_config` object; raise InvalidField naming the field."""
        if not isinstance(config, Mapping):
            raise InvalidField(field_prefix, "must be an object")
        unknown = sorted(set(config) - {"type", "url", "headers", "payload"})
        if unknown:
            raise InvalidField(field_prefix, f"unknown field {unknown[0]!r}")
        kind = config.get("type", "http")
        if kind != "http":
            raise InvalidField(f"{field_prefix}.type", f"must be 'http', got {kind!r}")
        url = config.get("url")
        if not isinstance(url, str) or not url:
            raise InvalidField(f"{field_prefix}.url", "is required and must be a string")
        problem = url_problem(url)
        if problem is not None:
            raise InvalidField(f"{field_prefix}.url", problem)
        headers = config.get("headers", {}) or {}
        if not isinstance(headers, Mapping):
            raise InvalidField(f"{field_prefix}.headers", "must be an object of strings")
        for name, value in headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise InvalidField(f"{field_prefix}.headers", f"invalid header name {name!r}")
            if name.lower() in FORBIDDEN_HEADERS:
                raise InvalidField(
                    f"{field_prefix}.headers.{name}",
                    "is set by the HTTP client (framing and hop-by-hop headers can't be given)",
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
        payload = config.get("payload")
        check_json(payload, f"{field_prefix}.payload")
        return cls(url=url, headers=dict(headers), payload=payload)

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "http",
            "url": self.url,
            "headers": dict(self.headers),
            "payload": self.payload,
        }

    def destination(self) -> str:
        return destination(self.url)

    async def deliver(self, timer_id: uuid.UUID, context: DeliveryContext) -> DeliveryResult:
        session = context.resource(
            "http-session", lambda: new_session(context.policy), _close_session
        )
        return await deliver(
            session, timer_id, self, context.timeout, context.policy, context.signing_secrets
        )


async def _close_session(session: aiohttp.ClientSession) -> None:
    await session.close()


def _parse(config: Any, field_name: str, policy: OutboundPolicy | None) -> HttpCallback:
    callback = HttpCallback.from_config(config, field_name)
    if policy is not None:
        try:
            policy.check_url(callback.url)
        except Blocked as exc:
            raise InvalidField(f"{field_name}.url", f"refused: {exc}") from None
    return callback


USER_AGENT = f"timers/{__version__}"
# A receiver's answer matters only for its status; the body is read (so the connection can be
# reused) up to this much, and a longer one closes the connection instead.
MAX_RESPONSE_BYTES = 64 * 1024
# Headers the delivery sets itself; a timer's own header of the same name is dropped.
CONTRACT_HEADERS = ("content-type", "x-timer-id", "user-agent", "host", *SIGNATURE_HEADERS)


def new_session(policy: OutboundPolicy) -> aiohttp.ClientSession:
    """A session for one worker process (call it on the delivery loop): connections to receivers
    are kept alive between callbacks (pooled by address, and by name for https); `deliver` gives
    it addresses that `policy` allowed, and its resolver refuses the rest should a name reach it
    (see `timers.outbound`); no proxy or `.netrc` from the environment and no cookies carried
    from one timer to the next. Concurrency limits are the engine's."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, resolver=policy.resolver()),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    )


def request_headers(
    timer_id: uuid.UUID,
    callback: HttpCallback,
    body: bytes = b"",
    signing_secrets: tuple[bytes, ...] = (),
    now: float | None = None,
) -> dict[str, str]:
    """The headers of a delivery: the timer's own, then the service's (`User-Agent`,
    `Content-Type`, `X-Timer-Id` and, with signing secrets, the Standard Webhooks signature of
    `body` made at `now`, Unix seconds, by default the moment of the call)."""
    headers = {"User-Agent": USER_AGENT}
    headers.update(
        (name, value)
        for name, value in callback.headers.items()
        if name.lower() not in CONTRACT_HEADERS
    )
    headers["Content-Type"] = "application/json"
    headers["X-Timer-Id"] = str(timer_id)
    timestamp = int(time.time() if now is None else now)
    headers.update(signature_headers(signing_secrets, str(timer_id), timestamp, body))
    return headers


async def deliver(
    session: aiohttp.ClientSession,
    timer_id: uuid.UUID,
    callback: HttpCallback,
    timeout: float,
    policy: OutboundPolicy,
    signing_secrets: tuple[bytes, ...] = (),
) -> DeliveryResult:
    """POST `callback.payload` as JSON to `callback.url`, all of it within `timeout` seconds;
    signed (Standard Webhooks) when `signing_secrets` are given: the signature covers exactly the
    bytes sent.

    The host is resolved here, through `policy`, and the request goes to an address it allows
    (the next one only if connecting to one fails), holding a slot for that address and port
    (`timers.worker.destinations`; waiting for it is not part of `timeout`); the URL's host goes in
    `Host` and, for https, in SNI and the certificate check.

    Delivered (error None) on a 2xx answer; else a short reason: `HTTP 500`, `timeout after 30s`,
    `connection error: …`, `TLS error: …`, `request error: …`, `blocked: …` (a destination the
    outbound policy refuses), with whether a retry can help (see `timers.retries`) and the
    receiver's `Retry-After`. Redirects are not followed (a 3xx is a failure).
    """
    try:
        policy.check_url(callback.url)
    except Blocked as exc:
        return DeliveryResult(f"blocked: {exc}", retryable=False)
    route = Route.of(callback.url)
    host, port = route.host, route.port
    body = json.dumps(callback.payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = request_headers(timer_id, callback, body, signing_secrets)
    headers["Host"] = route.host_header
    began = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            addresses = await policy.addresses(host, port)
    except TimeoutError:
        return DeliveryResult(f"timeout after {timeout:g}s")
    except Blocked as exc:
        return DeliveryResult(f"blocked: {exc}", retryable=False)
    except OSError as exc:
        return DeliveryResult(f"connection error: DNS lookup of {host} failed ({_reason(exc)})")
    left = timeout - (time.monotonic() - began)
    unreachable = None
    try:
        for address in addresses:
            async with take_slot((address, port)):
                began = time.monotonic()
                try:
                    return await _post(
                        session, route.at(address), headers, body, route.tls_name, left
                    )
                except aiohttp.ClientConnectorError as exc:
                    unreachable = exc  # no connection made: the next address, if there is one
                left -= time.monotonic() - began
    except TimeoutError:
        return DeliveryResult(f"timeout after {timeout:g}s")
    assert unreachable is not None  # `addresses` is never empty
    if isinstance(unreachable.os_error, ConnectionRefusedError):
        return DeliveryResult(f"connection error: {host}:{port} refused the connection")
    return DeliveryResult(f"connection error: {_reason(unreachable)}")


async def _post(
    session: aiohttp.ClientSession,
    url: URL,
    headers: dict[str, str],
    body: bytes,
    tls_name: str | None,
    timeout: float,
) -> DeliveryResult:
    """One POST to the address in `url`. Raises TimeoutError, and ClientConnectorError when no
    connection could be made (so another address of the same host may be tried)."""
    try:
        async with asyncio.timeout(timeout):
            async with session.post(
                url, data=body, headers=headers, server_hostname=tls_name, allow_redirects=False
            ) as response:
                await _drain(response)
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
    except (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch) as exc:
        return DeliveryResult(f"TLS error: {_reason(exc)}")
    except aiohttp.ClientConnectorError:
        raise
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        return DeliveryResult(f"connection error: {_reason(exc)}")
    except aiohttp.ClientError as exc:
        return DeliveryResult(f"request error: {_reason(exc)}")
    if 200 <= status < 300:
        return DeliveryResult(None, status)
    return DeliveryResult(f"HTTP {status}", status, retryable_status(status), retry_after)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: a number of seconds or an HTTP date; None if absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read the answer up to MAX_RESPONSE_BYTES; a longer one is cut off with its connection."""
    read = 0
    while read <= MAX_RESPONSE_BYTES:
        chunk = await response.content.read(MAX_RESPONSE_BYTES + 1 - read)
        if not chunk:
            return
        read += len(chunk)
    response.close()


def _reason(exc: BaseException) -> str:
    """The innermost cause's message, which names the real problem (refused, DNS, certificate)."""
    inner: BaseException = exc
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    text = str(inner) or str(exc) or type(exc).__name__
    return text[:200]


KIND = Kind("http", HttpConfig, _parse)
