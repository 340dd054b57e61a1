"""Clocks for the twins: the real one, and one that moves only when told to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class ManualClock:
    """A wall clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def utc_now() -> datetime:
    return datetime.now(UTC)
