"""Callback kinds: what a timer does when it fires. One module per kind, each behind the same small
interface: a request schema for the API, `parse` (check a stored or submitted config; raise
InvalidField naming the field), `permit` (check it against the deployment's `CallbackRules`)
and, on the parsed callback, `destination` and `deliver`. Adding a kind touches this folder and
`KINDS` below, nothing else. The interface is in `timers.callbacks.base`.

- `http`: POST a JSON payload to a URL (`timers.callbacks.http`);
- `celery`: publish a Celery task message, task id = timer id (`timers.callbacks.celery`);
- `nats`: publish a message to a NATS subject, `Nats-Msg-Id` = timer id (`timers.callbacks.nats`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timers.callbacks import celery, http, nats
from timers.callbacks.base import Callback, DeliveryContext, Kind
from timers.callbacks.rules import CallbackRules
from timers.models import InvalidField

__all__ = [
    "CALLBACK_TYPES",
    "KINDS",
    "Callback",
    "CallbackRules",
    "DeliveryContext",
    "Kind",
    "parse",
]

KINDS: dict[str, Kind] = {kind.name: kind for kind in (http.KIND, celery.KIND, nats.KIND)}
CALLBACK_TYPES = tuple(KINDS)


def parse(
    callback_type: str,
    config: Any,
    field_name: str = "callback_config",
    *,
    rules: CallbackRules,
) -> Callback:
    """The callback a timer's `callback_type` and `callback_config` describe, within `rules`;
    raises InvalidField naming the field. With an outbound policy in `rules`, a destination it
    refuses is refused here too (the API's check; delivery checks again after DNS resolution).
    Every way in (the API, the Python API) and the worker, before it delivers, parse with the
    same rules."""
    kind = KINDS.get(callback_type)
    if kind is None:
        raise InvalidField(
            "callback_type", f"must be one of {', '.join(CALLBACK_TYPES)}, got {callback_type!r}"
        )
    if not isinstance(config, Mapping):
        raise InvalidField(field_name, "must be an object")
    given = config.get("type", callback_type)
    if given != callback_type:
        raise InvalidField(
            f"{field_name}.type", f"{given!r} does not match callback_type {callback_type!r}"
        )
    callback = kind.parse(config, field_name, rules.policy)
    kind.permit(callback, rules, field_name)
    return callback
