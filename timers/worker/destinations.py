"""Caps on the deliveries in flight to one destination from one worker process.

The engine takes a slot for each delivery under the receiver's name (`Callback.destination()`:
for HTTP the scheme, host and port). Names cost nothing to make: a wildcard DNS record sends
`a1.evil.example`, `a2.evil.example`, … to one address, each name with a cap of its own. So a kind
that learns where a delivery really goes (HTTP: the address its host resolved to, and the port)
takes a second slot under that, from the same engine with the same limit, before it connects:
`async with take_slot((address, port))`. The engine makes its slots the current ones while it
runs a delivery; outside an engine `take_slot` waits for nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import NamedTuple


class _Gate:
    """A semaphore for one destination, dropped when no delivery uses it."""

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0


class _Hold:
    """Holding one of a key's slots, as an `async with` (a class rather than a generator-based
    context manager: every delivery takes two, and this costs a third as much)."""

    __slots__ = ("_gates", "_key", "_gate")

    def __init__(self, gates: dict[Hashable, _Gate], key: Hashable, limit: int) -> None:
        gate = gates.get(key)
        if gate is None:
            gate = gates[key] = _Gate(limit)
        self._gates, self._key, self._gate = gates, key, gate

    async def __aenter__(self) -> None:
        self._gate.users += 1
        try:
            await self._gate.semaphore.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._gate.semaphore.release()
        self._leave()

    def _leave(self) -> None:
        self._gate.users -= 1
        if self._gate.users == 0 and self._gates.get(self._key) is self._gate:
            del self._gates[self._key]


class OwnCap(NamedTuple):
    """A destination with a cap of its own, whatever the engine's per-destination cap."""

    name: str
    limit: int


class DestinationSlots:
    """At most `limit` holders per key at once (use on one event loop)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._gates: dict[Hashable, _Gate] = {}

    def take(self, key: Hashable) -> AbstractAsyncContextManager[None]:
        """Hold one of `key`'s slots for the body of the `async with`, waiting for one if all
        are taken (an `OwnCap` key: its own number of slots)."""
        limit = key.limit if isinstance(key, OwnCap) else self.limit
        return _Hold(self._gates, key, limit)


_current: ContextVar[DestinationSlots | None] = ContextVar("destination_slots", default=None)


@contextmanager
def current_slots(slots: DestinationSlots) -> Iterator[None]:
    """Make `slots` the ones `take_slot` takes from, in this task, for the `with` body."""
    token = _current.set(slots)
    try:
        yield
    finally:
        _current.reset(token)


def take_slot(key: Hashable) -> AbstractAsyncContextManager[None]:
    """A slot for `key` from the engine running this delivery; outside one, no wait at all."""
    slots = _current.get()
    return nullcontext() if slots is None else slots.take(key)
