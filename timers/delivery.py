"""One HTTP callback: POST the payload, classify the outcome in a short error string.

`deliver` is a coroutine on an aiohttp session; it never raises for anything a receiver or a stored
config can do (the caller still guards against the unforeseen). Its whole life (connect, send, wait,
read) is bounded by one deadline, and it reads at most `MAX_RESPONSE_BYTES` of the answer.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp

from timers import __version__
from timers.models import HttpCallback
from timers.outbound import Blocked, OutboundPolicy

USER_AGENT = f"timers/{__version__}"
# A receiver's answer matters only for its status; the body is read (so the connection can be
# reused) up to this much, and a longer one closes the connection instead.
MAX_RESPONSE_BYTES = 64 * 1024
# Headers the delivery sets itself; a timer's own header of the same name is dropped.
CONTRACT_HEADERS = ("content-type", "x-timer-id", "user-agent")


def new_session(policy: OutboundPolicy) -> aiohttp.ClientSession:
    """A session for one worker process (call it on the delivery loop): connections to receivers
    are kept alive between callbacks and made only to addresses `policy` allows (checked after
    DNS resolution, see `timers.outbound`); no proxy or `.netrc` from the environment and no
    cookies carried from one timer to the next. Concurrency limits are the engine's."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, resolver=policy.resolver()),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    )


def request_headers(timer_id: uuid.UUID, callback: HttpCallback) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    headers.update(
        (name, value)
        for name, value in callback.headers.items()
        if name.lower() not in CONTRACT_HEADERS
    )
    headers["Content-Type"] = "application/json"
    headers["X-Timer-Id"] = str(timer_id)
    return headers


async def deliver(
    session: aiohttp.ClientSession,
    timer_id: uuid.UUID,
    callback: HttpCallback,
    timeout: float,
    policy: OutboundPolicy,
) -> str | None:
    """POST `callback.payload` as JSON to `callback.url`, all of it within `timeout` seconds.

    Returns None on a 2xx answer, else a short reason: `HTTP 500`, `timeout after 30s`,
    `connection error: …`, `TLS error: …`, `request error: …`, `blocked: …` (a destination the
    outbound policy refuses). Redirects are not followed (a 3xx is a failure).
    """
    try:
        policy.check_url(callback.url)  # IP literals: aiohttp does not resolve them
    except Blocked as exc:
        return f"blocked: {exc}"
    body = json.dumps(callback.payload, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        async with asyncio.timeout(timeout):
            async with session.post(
                callback.url,
                data=body,
                headers=request_headers(timer_id, callback),
                allow_redirects=False,
            ) as response:
                await _drain(response)
                status = response.status
    except TimeoutError:
        return f"timeout after {timeout:g}s"
    except (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch) as exc:
        return f"TLS error: {_reason(exc)}"
    except aiohttp.ClientConnectorDNSError as exc:
        if isinstance(exc.os_error, Blocked):
            return f"blocked: {exc.os_error}"
        return f"connection error: DNS lookup of {exc.host} failed ({_reason(exc)})"
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"connection error: {exc.host}:{exc.port} refused the connection"
        return f"connection error: {_reason(exc)}"
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        return f"connection error: {_reason(exc)}"
    except aiohttp.ClientError as exc:
        return f"request error: {_reason(exc)}"
    if 200 <= status < 300:
        return None
    return f"HTTP {status}"


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
