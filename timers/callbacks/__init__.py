"""Callback kinds: what a timer does when it fires. One module per kind, each behind the same small
interface: a request schema for the API, `parse` (check a stored or submitted config; raise
InvalidCallback naming the field), `permit` (check it against the deployment's `CallbackRules`)
and, on the parsed callback, `destination` and `deliver`. Adding a kind touches this folder and
`KINDS` below, nothing else.

- `http`: POST a JSON payload to a URL (`timers.callbacks.http`);
- `celery`: publish a Celery task message, task id = timer id (`timers.callbacks.celery`);
- `nats`: publish a message to a NATS subject, `Nats-Msg-Id` = timer id (`timers.callbacks.nats`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import BaseModel

from timers.callbacks.rules import CallbackRules
from timers.config import DEFAULT_NATS_URL
from timers.models import InvalidCallback
from timers.outbound import OutboundPolicy
from timers.retries import DeliveryResult


class Callback(Protocol):
    kind: str

    def to_config(self) -> dict[str, Any]:
        """The config as stored (`callback_config`)."""
        ...

    def destination(self) -> str:
        """Who receives it, for the per-destination cap (e.g. scheme, host and port)."""
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
    # InvalidCallback naming the field.
    permit: Callable[[Any, CallbackRules, str], None] = _no_rules


def _kinds() -> dict[str, Kind]:
    from timers.callbacks import celery, http, nats

    return {kind.name: kind for kind in (http.KIND, celery.KIND, nats.KIND)}


KINDS = _kinds()
CALLBACK_TYPES = tuple(KINDS)


def parse(
    callback_type: str,
    config: Any,
    field_name: str = "callback_config",
    *,
    rules: CallbackRules,
) -> Callback:
    """The callback a timer's `callback_type` and `callback_config` describe, within `rules`;
    raises InvalidCallback naming the field. With an outbound policy in `rules`, a destination it
    refuses is refused here too (the API's check; delivery checks again after DNS resolution).
    Every way in (the API, the Python API) and the worker, before it delivers, parse with the
    same rules."""
    kind = KINDS.get(callback_type)
    if kind is None:
        raise InvalidCallback(
            "callback_type", f"must be one of {', '.join(CALLBACK_TYPES)}, got {callback_type!r}"
        )
    if not isinstance(config, Mapping):
        raise InvalidCallback(field_name, "must be an object")
    given = config.get("type", callback_type)
    if given != callback_type:
        raise InvalidCallback(
            f"{field_name}.type", f"{given!r} does not match callback_type {callback_type!r}"
        )
    callback = kind.parse(config, field_name, rules.policy)
    kind.permit(callback, rules, field_name)
    return callback
