"""Admission: the one way a request becomes a new timer, whichever door it comes through (the REST
routes, the Python API `timers.Timers`, the REST client, the Celery drop-in through `Timers`).

It owns the rules a timer is admitted by: when it is due (`eta` or `countdown`, the clock grace
for "now", the furthest delay), its callback (parsed by its kind within `CallbackRules`, in our
`callback_config` form or mca-timer's tagged `callback`), its metadata and retry policy as JSON,
and the bounds every timer keeps (64 KiB, 32 metadata keys). Every refusal is an `InvalidTimer`
whose message starts with the field it names; the routes answer it as a 400 (code 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from pydantic import BaseModel

from timers import callbacks
from timers.callbacks import CallbackRules
from timers.errors import InvalidTimer
from timers.models import (
    DEFAULT_OWNER,
    TIMER_FIELD,
    InvalidField,
    TimerStatus,
    check_json,
    check_timer_bounds,
    require_aware,
)
from timers.retries import RetryPolicy
from timers.storage import NewTimer, Store

# A request for "now" that takes a moment to arrive is not "in the past".
CLOCK_GRACE = timedelta(seconds=1)

# The parts of a timer its bounds measure.
SIZED = ("callback_config", "metadata", "retry")


# -- when ----------------------------------------------------------------------------------------


def requested_time(eta: Any, countdown: Any, now: datetime) -> datetime:
    """The time `eta` (timezone-aware) or `countdown` seconds from `now` asks for (neither: now),
    in UTC; not checked against the clock (see `check_due`). Raises InvalidTimer."""
    if eta is not None and countdown is not None:
        raise InvalidTimer("eta, countdown: give one of them, not both")
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, int | float):
            raise InvalidTimer(f"countdown: a number of seconds, got {countdown!r}")
        return now + timedelta(seconds=countdown)
    if eta is not None:
        if not isinstance(eta, datetime):
            raise InvalidTimer(f"eta: a timezone-aware datetime, got {eta!r}")
        try:
            return require_aware(eta, "eta")
        except ValueError as exc:
            raise InvalidTimer(str(exc)) from None
    return now


def check_due(at: datetime, now: datetime, max_delay: timedelta, field: str) -> None:
    """Refuse a time in the past (beyond CLOCK_GRACE) or further ahead than `max_delay`
    (TIMERS_MAX_DELAY); raises InvalidTimer naming `field`."""
    try:
        in_the_past = at < now - CLOCK_GRACE
        too_far = at > now + max_delay
    except OverflowError:  # beyond year 9999 once converted to UTC
        in_the_past, too_far = False, True
    if in_the_past:
        raise InvalidTimer(
            f"{field}: {at.isoformat()} is in the past (server time {now.isoformat()})"
        )
    if too_far:
        raise InvalidTimer(
            f"{field}: {at.isoformat()} is more than {max_delay.days} days ahead (TIMERS_MAX_DELAY)"
        )


def due_time(eta: Any, countdown: Any, now: datetime, max_delay: timedelta) -> datetime:
    """When a timer given `eta` or `countdown` (or neither: now) is due, checked against `now`;
    raises InvalidTimer."""
    at = requested_time(eta, countdown, now)
    check_due(at, now, max_delay, "eta")
    return at


# -- what ----------------------------------------------------------------------------------------


class CallbackRequest(Protocol):
    """A create or update body: ours, mca-timer's, or (update) neither."""

    @property
    def callback_type(self) -> str | None: ...

    @property
    def callback_config(self) -> BaseModel | None: ...

    @property
    def callback(self) -> BaseModel | None: ...


def requested_callback(
    body: CallbackRequest, *, required: bool
) -> tuple[str, dict[str, Any], str] | None:
    """The callback a body asks for, as (callback_type, config, the field it came in), from
    `callback_config` or mca-timer's `callback`; None when it gives neither and none is
    `required`. Giving both, or neither when one is required, is an InvalidTimer."""
    given = body.callback if body.callback is not None else body.callback_config
    if body.callback is not None and body.callback_config is not None:
        raise InvalidTimer("callback: give either callback_config or callback (mca-timer's form)")
    if given is None:
        if required:
            raise InvalidTimer("callback_config: Field required (or mca-timer's callback)")
        return None
    field = "callback_config" if body.callback is None else "callback"
    kind = body.callback_type or str(getattr(given, "type", "http"))
    return kind, given.model_dump(exclude_none=True), field


def checked_callback(
    callback_type: str, config: Any, field: str, rules: CallbackRules
) -> dict[str, Any]:
    """The stored form of a callback its kind accepts within `rules`; raises InvalidTimer."""
    try:
        return callbacks.parse(callback_type, config, field, rules=rules).to_config()
    except InvalidField as exc:
        raise InvalidTimer(str(exc)) from None


def checked_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Metadata that is JSON PostgreSQL and the wire can hold; raises InvalidTimer."""
    if metadata is None:
        return None
    try:
        check_json(metadata, "metadata")
    except InvalidField as exc:
        raise InvalidTimer(str(exc)) from None
    return dict(metadata)


def checked_retry(retry: Mapping[str, Any] | BaseModel | None) -> dict[str, Any] | None:
    """The stored form of a retry policy (`timers.retries`); raises InvalidTimer."""
    if retry is None:
        return None
    config = retry.model_dump() if isinstance(retry, BaseModel) else retry
    try:
        return RetryPolicy.from_config(config).to_config()
    except InvalidField as exc:
        raise InvalidTimer(str(exc)) from None


def check_bounds(config: Any, metadata: Any, retry: Any) -> None:
    """Refuse a timer over the bounds every timer keeps (`check_timer_bounds`); InvalidTimer."""
    try:
        check_timer_bounds(config, metadata, retry)
    except InvalidField as exc:
        raise InvalidTimer(str(exc)) from None


def check_bounds_after(
    store: Store, timer_id: UUID, changes: Mapping[str, Any], owner: str | None = None
) -> None:
    """Refuse `changes` that would leave the timer over the bounds: the parts they keep are read
    from the timer (of this owner, when given; raises TimerNotFound). A timer that is not
    pending is left to the update to refuse."""
    kept = [name for name in SIZED if name not in changes]
    if len(kept) == len(SIZED):
        return
    current = store.get(timer_id, owner) if kept else None
    if current is not None and current.status is not TimerStatus.PENDING:
        return
    parts = {name: changes[name] if name in changes else getattr(current, name) for name in SIZED}
    check_bounds(parts["callback_config"], parts["metadata"], parts["retry"])


def in_batch(index: int, message: str) -> str:
    """A batch item's error: `timers[3].field: …`, or `timers[3]: …` about the timer as a whole."""
    whole = f"{TIMER_FIELD}: "
    if message.startswith(whole):
        return f"timers[{index}]: {message.removeprefix(whole)}"
    return f"timers[{index}].{message}"


# -- the one way in ------------------------------------------------------------------------------


def admit(
    *,
    execute_at: datetime,
    callback_type: str,
    callback_config: Any,
    rules: CallbackRules,
    field: str = "callback_config",
    metadata: Mapping[str, Any] | None = None,
    retry: Mapping[str, Any] | BaseModel | None = None,
    owner: str = DEFAULT_OWNER,
) -> NewTimer:
    """The new timer a request asks for: its callback (given in `field`), metadata, retry policy
    and bounds checked, in that order. Its time is checked apart (`check_due`, `due_time`): a
    retried create may come after the time it asked for. Raises InvalidTimer."""
    config = checked_callback(callback_type, callback_config, field, rules)
    new = NewTimer(
        execute_at=execute_at,
        callback_type=config["type"],
        callback_config=config,
        metadata=checked_metadata(metadata),
        retry=checked_retry(retry),
        owner=owner,
    )
    check_bounds(new.callback_config, new.metadata, new.retry)
    return new
