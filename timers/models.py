"""Value objects: the timer, its status, its HTTP callback, and UUIDv7 ids.

A `Timer` is immutable and always holds timezone-aware UTC datetimes; naive ones are rejected
here, so they cannot get in from any edge.
"""

from __future__ import annotations

import enum
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit


class TimerStatus(enum.StrEnum):
    PENDING = "pending"
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class InvalidCallback(ValueError):
    """A callback configuration that cannot be delivered; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


CALLBACK_TYPES = ("http",)

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
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 4000  # Python refuses to convert longer integers to or from text
MAX_URL_LENGTH = 2048


class TooLongInteger(str):
    """An integer read from the database that is too long for Python to convert (only a direct
    write can store one): kept as its text so the row stays readable; `check_json` refuses it."""


def check_json(value: Any, field: str, depth: int = 0) -> None:
    """Refuse what PostgreSQL's JSONB or the wire can't hold as it is: nesting deeper than
    MAX_JSON_DEPTH, non-finite numbers, NUL characters and lone surrogates. Raises InvalidCallback
    naming the field."""
    if depth > MAX_JSON_DEPTH:
        raise InvalidCallback(field, f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidCallback(field, "numbers must be finite (no NaN or Infinity)")
    if isinstance(value, TooLongInteger) or (
        isinstance(value, int) and abs(value) >= 10**MAX_INT_DIGITS
    ):
        raise InvalidCallback(field, f"integers must have at most {MAX_INT_DIGITS} digits")
    if isinstance(value, str):
        _check_text(value, field)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(str(key), field)
            check_json(item, f"{field}.{key}", depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json(item, f"{field}[{index}]", depth + 1)


def _check_text(text: str, field: str) -> None:
    if "\x00" in text:
        raise InvalidCallback(field, "must not contain NUL characters (\\u0000)")
    if any("\ud800" <= c <= "\udfff" for c in text):
        raise InvalidCallback(field, "must not contain lone surrogates (\\ud800-\\udfff)")


@dataclass(frozen=True)
class HttpCallback:
    """An HTTP POST of `payload` as JSON to `url` with `headers`."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    payload: Any = None

    @classmethod
    def from_config(cls, config: Any, field_prefix: str = "callback_config") -> HttpCallback:
        """Parse and validate a `callback_config` object; raise InvalidCallback naming the field."""
        if not isinstance(config, Mapping):
            raise InvalidCallback(field_prefix, "must be an object")
        unknown = sorted(set(config) - {"type", "url", "headers", "payload"})
        if unknown:
            raise InvalidCallback(field_prefix, f"unknown field {unknown[0]!r}")
        kind = config.get("type", "http")
        if kind != "http":
            raise InvalidCallback(f"{field_prefix}.type", f"must be 'http', got {kind!r}")
        url = config.get("url")
        if not isinstance(url, str) or not url:
            raise InvalidCallback(f"{field_prefix}.url", "is required and must be a string")
        _check_url(url, f"{field_prefix}.url")
        headers = config.get("headers", {}) or {}
        if not isinstance(headers, Mapping):
            raise InvalidCallback(f"{field_prefix}.headers", "must be an object of strings")
        for name, value in headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise InvalidCallback(f"{field_prefix}.headers", f"invalid header name {name!r}")
            if name.lower() in FORBIDDEN_HEADERS:
                raise InvalidCallback(
                    f"{field_prefix}.headers.{name}",
                    "is set by the HTTP client (framing and hop-by-hop headers can't be given)",
                )
            if not isinstance(value, str):
                raise InvalidCallback(
                    f"{field_prefix}.headers.{name}", "header values must be strings"
                )
            if not _HEADER_VALUE.fullmatch(value):
                raise InvalidCallback(
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


def _check_url(url: str, field_name: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidCallback(field_name, f"must be at most {MAX_URL_LENGTH} characters")
    if not url.isascii():
        raise InvalidCallback(field_name, "must be ASCII (encode non-ASCII host names as IDNA)")
    if any(c.isspace() for c in url):
        raise InvalidCallback(field_name, "must not contain whitespace")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise InvalidCallback(field_name, f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidCallback(field_name, "must be an absolute http:// or https:// URL")
    if not parts.hostname:
        raise InvalidCallback(field_name, "must have a host")
    host = parts.hostname.rstrip(".")
    if not host.startswith("[") and ":" not in host:
        labels = host.split(".")
        if len(host) > 253 or any(not 0 < len(label) < 64 for label in labels):
            raise InvalidCallback(field_name, f"host {parts.hostname!r} is not a valid name")


def require_aware(value: datetime, name: str) -> datetime:
    """Return `value` in UTC; raise ValueError if it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (include an offset such as Z or +00:00)")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Timer:
    id: uuid.UUID
    execute_at: datetime
    callback_type: str
    callback_config: Mapping[str, Any]
    status: TimerStatus
    created_at: datetime
    updated_at: datetime
    executed_at: datetime | None = None
    last_error: str | None = None
    metadata: Mapping[str, Any] | None = None
    attempts: int = 0
    claimed_at: datetime | None = None
    started_at: datetime | None = None
    leased_until: datetime | None = None

    def __post_init__(self) -> None:
        for name in (
            "execute_at",
            "created_at",
            "updated_at",
            "executed_at",
            "claimed_at",
            "started_at",
            "leased_until",
        ):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, require_aware(value, name))
        object.__setattr__(self, "status", TimerStatus(self.status))

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Timer:
        return cls(
            id=row["id"],
            execute_at=row["execute_at"],
            callback_type=row["callback_type"],
            callback_config=row["callback_config"],
            status=TimerStatus(row["status"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            executed_at=row.get("executed_at"),
            last_error=row.get("last_error"),
            metadata=row.get("metadata"),
            attempts=row.get("attempts", 0),
            claimed_at=row.get("claimed_at"),
            started_at=row.get("started_at"),
            leased_until=row.get("leased_until"),
        )


class DueTime(NamedTuple):
    """All the scheduler's cache needs of a pending timer: which one, and when it is due."""

    id: uuid.UUID
    execute_at: datetime


_uuid7_lock = threading.Lock()
_uuid7_last = 0


def uuid7() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits; monotonic within a process."""
    global _uuid7_last
    with _uuid7_lock:
        # 48 bits of milliseconds + 12 bits of sub-millisecond counter keeps ids sortable by creation.
        now = time.time_ns() // 1_000_000 << 12
        _uuid7_last = max(now, _uuid7_last + 1)
        stamp = _uuid7_last
    ms, seq = stamp >> 12, stamp & 0xFFF
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    return uuid.UUID(int=value)
