"""What every callback kind is made of, and what the worker gives their deliveries: the parsed
`Callback` protocol, the `Kind` a kind module exports as `KIND` (its API schema, `parse` and
`permit`), and the `DeliveryContext` deliveries share. The kind modules import this module; the
package (`timers.callbacks`) imports the kinds and lists them in `KINDS`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import BaseModel

from timers.callbacks.rules import CallbackRules
from timers.config import DEFAULT_NATS_URL
from timers.outbound import OutboundPolicy
from timers.retries import DeliveryResult


class Callback(Protocol):
    kind: str

    def to_config(self) -> dict[str, Any]:
        """The config as stored (`callback_config`)."""
        ...

    def destination(self) -> Hashable:
        """Who receives it, for the per-destination cap (e.g. scheme, host and port; an
        `OwnCap` for a receiver with a cap of its own)."""
        ...

    async def deliver(
        self, timer_id: uuid.UUID, context: DeliveryContext
    ) -> str | DeliveryResult | None:
        """Deliver it within `context.timeout`: None (or a result without error) when delivered,
        else a short reason (retryable) or a `DeliveryResult` saying more. May raise for the
        unforeseen (the engine then fails this timer alone)."""
        ...


@dataclass
class DeliveryContext:
    """What deliveries of one worker process share: the deadline, the outbound policy, the
    broker for task messages, the NATS server for messages, the keys that sign `http` callbacks
    (none: unsigned; `owner_secrets` holds those of the principals that have keys of their own,
    see `for_owner`), and resources each kind makes once and reuses (an HTTP session, a
    broker connection pool), closed with the context."""

    timeout: float
    policy: OutboundPolicy
    task_broker_url: str | None = None
    signing_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    nats_url: str = DEFAULT_NATS_URL
    owner_secrets: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict, repr=False)
    _resources: dict[str, Any] = field(default_factory=dict)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def for_owner(self, owner: str) -> DeliveryContext:
        """This context for one principal's timer: signed with its own keys if it has any, else
        the plain ones; the resources stay shared."""
        own = self.owner_secrets.get(owner)
        return self if own is None else replace(self, signing_secrets=own)

    def resource(
        self, key: str, make: Callable[[], Any], close: Callable[[Any], Awaitable[None]]
    ) -> Any:
        if key not in self._resources:
            made = self._resources[key] = make()
            self._closers.append(lambda: close(made))
        return self._resources[key]

    async def close(self) -> None:
        for closer in reversed(self._closers):
            await closer()
        self._closers.clear()
        self._resources.clear()


def _no_rules(callback: Any, rules: CallbackRules, field_name: str) -> None:
    """A kind with nothing to check against the rules beyond what `parse` did."""


@dataclass(frozen=True)
class Kind:
    name: str
    schema: type[BaseModel]  # the API's request schema for its callback_config
    # Checks a config; with a policy, also refuses destinations it forbids (at the API).
    parse: Callable[[Any, str, OutboundPolicy | None], Callback]
    # Refuses a parsed callback the deployment's rules forbid (allow-lists); raises
    # InvalidField naming the field.
    permit: Callable[[Any, CallbackRules, str], None] = _no_rules
