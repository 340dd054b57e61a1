"""The bounds every timer keeps (`timers.models.check_timer_bounds`), as the API applies them: to a
new timer, to the timer an update would leave, and named by index in a batch."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from timers.api.envelope import ApiError, Code
from timers.models import TIMER_FIELD, InvalidCallback, TimerStatus, check_timer_bounds
from timers.storage import TimerRepository

SIZED = ("callback_config", "metadata", "retry")


def check(config: Any, metadata: Any, retry: Any) -> None:
    """Refuse (400, code 2) a timer over the bounds."""
    try:
        check_timer_bounds(config, metadata, retry)
    except InvalidCallback as exc:
        raise ApiError(Code.VALIDATION, str(exc)) from None


def check_after(
    store: TimerRepository, timer_id: UUID, changes: dict[str, Any], owner: str | None = None
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
    check(parts["callback_config"], parts["metadata"], parts["retry"])


def in_batch(index: int, message: str) -> str:
    """A batch item's error: `timers[3].field: …`, or `timers[3]: …` about the timer as a whole."""
    whole = f"{TIMER_FIELD}: "
    if message.startswith(whole):
        return f"timers[{index}]: {message.removeprefix(whole)}"
    return f"timers[{index}].{message}"
