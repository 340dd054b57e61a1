"""mca-timer's wire format, beside ours: the tagged `callback` object its clients send.

    {"execute_at": "…", "callback": {"type": "http", "url": "…", "headers": {…}, "payload": …}}
    {"execute_at": "…", "callback": {"type": "nats", "topic": "orders", "key": "42", "payload": …}}

A `callback` is our `callback_type` + `callback_config` under another name: `http` is the same
object, `nats` names its subject as `topic` and `key` (published on `topic.key`, see
`timers.callbacks.nats`), `celery` is ours. `headers: null` means none. Checked by the same kind
parsers, so the only differences are the spelling and the field named in errors (`callback.url`).
Responses carry `callback` (`tagged`) beside `callback_type`/`callback_config`; which of the two
forms a request used is read by `timers.admission.requested_callback`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from timers.callbacks.celery import CeleryConfig
from timers.callbacks.http import HeaderName, HeaderValue, HttpConfig
from timers.callbacks.nats import MAX_SUBJECT_LENGTH


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


# mca-timer's `headers`: an object of strings, or null for none.
Headers = Annotated[
    dict[HeaderName, HeaderValue],
    BeforeValidator(_none_is_empty, json_schema_input_type=dict[HeaderName, HeaderValue] | None),
]


class HttpCallback(HttpConfig):
    """mca-timer's `http` callback: POST `payload` as JSON to `url` with `headers` (our `http`
    `callback_config`, with `type` required)."""

    type: Literal["http"]
    headers: Headers = Field(default_factory=dict)


class NatsCallback(BaseModel):
    """mca-timer's `nats` callback: publish `payload` as JSON on `topic.key` (on `topic` without a
    key; an empty message without a payload), with `headers`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["nats"]
    topic: str = Field(
        max_length=MAX_SUBJECT_LENGTH,
        description="Dot-separated tokens of visible ASCII, without wildcards (`*`, `>`).",
        examples=["timers.test.execution"],
    )
    key: str | None = Field(
        default=None,
        max_length=MAX_SUBJECT_LENGTH,
        description="Appended to the topic: the subject is `topic.key`.",
        examples=["test-key-123"],
    )
    headers: Headers = Field(default_factory=dict)
    payload: Any = Field(default=None, description="Any JSON; none: an empty message.")


def _tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, Mapping) else getattr(value, "type", None)
    return kind if isinstance(kind, str) else None


Callback = Annotated[
    Annotated[HttpCallback, Tag("http")]
    | Annotated[CeleryConfig, Tag("celery")]
    | Annotated[NatsCallback, Tag("nats")],
    Discriminator(_tag),
    Field(description="mca-timer's form of `callback_type` + `callback_config`, tagged by `type`."),
]


def tagged(callback_type: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The `callback` a response shows for a stored config (redacted already): its tagged object,
    with a `nats` subject also given as mca-timer's `topic` when it was not given as one."""
    shown = {"type": callback_type, **config}
    if callback_type == "nats" and "topic" not in shown and "subject" in shown:
        shown["topic"] = shown["subject"]
    return shown
