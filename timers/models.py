"""Value objects: the timer, its status, its HTTP callback, and UUIDv7 ids.

A `Timer` is immutable and always holds timezone-aware UTC datetimes; naive ones are rejected
here, so they cannot get in from any edge.
"""

from __future__ import annotations

import enum
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple


class TimerStatus(enum.StrEnum):
    PENDING = "pending"
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


# The principal of unnamed API keys, and the owner of every timer made before principals existed.
DEFAULT_OWNER = "default"


class InvalidField(ValueError):
    """A value of a timer that can't be taken as given (its callback, metadata, retry policy or
    size); the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 4000  # Python refuses to convert longer integers to or from text
_INT_LIMIT = 10**MAX_INT_DIGITS


class TooLongInteger(str):
    """An integer read from the database that is too long for Python to convert (only a direct
    write can store one): kept as its text so the row stays readable; `check_json` refuses it."""


def check_json(value: Any, field: str, depth: int = 0) -> None:
    """Refuse what isn't JSON, or what PostgreSQL's JSONB or the wire can't hold as it is: nesting
    deeper than MAX_JSON_DEPTH, non-finite numbers, NUL characters and lone surrogates. Raises
    InvalidField naming the field."""
    if depth > MAX_JSON_DEPTH:
        raise InvalidField(field, f"is nested deeper than {MAX_JSON_DEPTH} levels")
    # The exact JSON types first: what a request body decodes to, without an ABC check each.
    kind = type(value)
    if kind is str:
        _check_text(value, field)
    elif kind is dict:
        _check_members(value, field, depth)
    elif kind is list:
        for index, item in enumerate(value):
            check_json(item, f"{field}[{index}]", depth + 1)
    elif value is None or kind is bool:
        pass
    else:
        _check_other(value, field, depth)


def _check_members(value: Mapping[str, Any], field: str, depth: int) -> None:
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidField(field, f"object keys must be strings, got {key!r}")
        _check_text(key, field)
        check_json(item, f"{field}.{key}", depth + 1)


def _check_other(value: Any, field: str, depth: int) -> None:
    """`check_json` of numbers, and of any other type (subclasses, other mappings, tuples)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidField(field, "numbers must be finite (no NaN or Infinity)")
    if isinstance(value, TooLongInteger) or (isinstance(value, int) and abs(value) >= _INT_LIMIT):
        raise InvalidField(field, f"integers must have at most {MAX_INT_DIGITS} digits")
    if isinstance(value, str):
        _check_text(value, field)
    elif isinstance(value, Mapping):
        _check_members(value, field, depth)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json(item, f"{field}[{index}]", depth + 1)
    elif value is not None and not isinstance(value, bool | int | float):
        raise InvalidField(field, f"{type(value).__name__} is not JSON")


MAX_TIMER_BYTES = 64 * 1024
MAX_METADATA_KEYS = 32  # each short pair is a row in `timer_labels` (migration 0009)
TIMER_FIELD = "timer"  # the field an error about the timer as a whole names


def check_timer_bounds(
    config: Mapping[str, Any],
    metadata: Mapping[str, Any] | None,
    retry: Mapping[str, Any] | None,
) -> None:
    """Refuse a timer over the bounds every timer keeps, wherever it comes in: at most
    MAX_METADATA_KEYS top-level metadata keys, and at most MAX_TIMER_BYTES of callback config,
    metadata and retry policy together, measured as their compact JSON in UTF-8 bytes. Raises
    InvalidField naming `metadata`, or TIMER_FIELD with the size and the limit. Takes JSON
    that `check_json` accepted."""
    if metadata is not None and len(metadata) > MAX_METADATA_KEYS:
        raise InvalidField(
            "metadata", f"{len(metadata)} keys; a timer's metadata has at most {MAX_METADATA_KEYS}"
        )
    size = sum(_json_bytes(part) for part in (config, metadata, retry) if part is not None)
    if size > MAX_TIMER_BYTES:
        raise InvalidField(
            TIMER_FIELD,
            f"{size:,} bytes of callback config, metadata and retry policy as compact JSON; "
            f"a timer holds at most {MAX_TIMER_BYTES:,} bytes (64 KiB)",
        )


def _json_bytes(value: Mapping[str, Any]) -> int:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


def _check_text(text: str, field: str) -> None:
    if "\x00" in text:
        raise InvalidField(field, "must not contain NUL characters (\\u0000)")
    if text.isascii():
        return
    try:  # strict UTF-8 refuses exactly the surrogates (U+D800-U+DFFF), in C
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField(field, "must not contain lone surrogates (\\ud800-\\udfff)") from None


def utc_now() -> datetime:
    """The clock of every process unless it is given another (tests pass theirs)."""
    return datetime.now(UTC)


def require_aware(value: datetime, name: str) -> datetime:
    """Return `value` in UTC; raise ValueError if it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (include an offset such as Z or +00:00)")
    return value.astimezone(UTC)


_TIMER_TIMES = (
    "execute_at",
    "created_at",
    "updated_at",
    "executed_at",
    "claimed_at",
    "started_at",
    "leased_until",
)


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
    claims: int = 0  # times the scheduler claimed it (the `attempts` column)
    claimed_at: datetime | None = None
    started_at: datetime | None = None
    leased_until: datetime | None = None
    retry: Mapping[str, Any] | None = None
    delivery_attempts: int = 0
    history: tuple[Mapping[str, Any], ...] = ()
    owner: str = DEFAULT_OWNER  # the principal whose key made it
    # An occurrence of a schedule: which one, and its slot before jitter (else None).
    schedule_id: uuid.UUID | None = None
    scheduled_for: datetime | None = None

    def __post_init__(self) -> None:
        for name in _TIMER_TIMES:
            value = getattr(self, name)
            if value is not None and value.tzinfo is not UTC:  # UTC already: as PostgreSQL gives
                object.__setattr__(self, name, require_aware(value, name))
        if type(self.status) is not TimerStatus:
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
            claims=row.get("attempts", 0),
            claimed_at=row.get("claimed_at"),
            started_at=row.get("started_at"),
            leased_until=row.get("leased_until"),
            retry=row.get("retry"),
            delivery_attempts=row.get("delivery_attempts", 0),
            history=tuple(row.get("history") or ()),
            owner=row.get("owner") or DEFAULT_OWNER,
            schedule_id=row.get("schedule_id"),
            scheduled_for=row.get("scheduled_for"),
        )


class DueTime(NamedTuple):
    """All the scheduler's cache needs of a pending timer: which one, and when it is due."""

    id: uuid.UUID
    execute_at: datetime


class Claimed(NamedTuple):
    """A timer a claim took, as the scheduler enqueues it: which one, the claim number it is
    enqueued under (its `claims` after the claim) and when it was due. Nothing of its callback:
    the worker reads that when it starts the delivery."""

    id: uuid.UUID
    claim: int
    execute_at: datetime
    schedule_id: uuid.UUID | None = None  # an occurrence's schedule (its next slots follow)


class Claims(list[Claimed]):
    """The timers a claim took, and the schedules of the occurrences it skipped instead (too late
    or overlapping): their next slots are to be made as well."""

    def __init__(
        self, claimed: Iterable[Claimed] = (), skipped_schedules: Iterable[uuid.UUID] = ()
    ) -> None:
        super().__init__(claimed)
        self.skipped_schedules = tuple(dict.fromkeys(skipped_schedules))

    def add(self, more: list[Claimed]) -> None:
        """Take in another claim's timers (and the schedules it skipped)."""
        self.extend(more)
        if isinstance(more, Claims) and more.skipped_schedules:
            skipped = (*self.skipped_schedules, *more.skipped_schedules)
            self.skipped_schedules = tuple(dict.fromkeys(skipped))


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
