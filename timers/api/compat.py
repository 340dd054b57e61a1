"""mca-timer's wire format, beside ours: the tagged `callback` object its clients send.

    {"execute_at": "…", "callback": {"type": "http", "url": "…", "headers": {…}, "payload": …}}
    {"execute_at": "…", "callback": {"type": "nats", "topic": "orders", "key": "42", "payload": …}}

A `callback` is our `callback_type` + `callback_config` under another name: `http` is the same
object, `nats` names its subject as `topic` and `key` (published on `topic.key`, see
`timers.callbacks.nats`), `celery` is ours. `headers: null` means none. Checked by the same kind
parsers, so the only differences are the spelling and the field named in errors (`callback.url`).
Responses carry `callback` (`tagged`) beside `callback_type`/`callback_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from timers.api.envelope import ApiError, Code
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


class CallbackRequest(Protocol):
    """A create or update body: ours, mca-timer's, or (update) neither."""

    @property
    def callback_type(self) -> str | None: ...

    @property
    def callback_config(self) -> BaseModel | None: ...

    @property
    def callback(self) -> BaseModel | None: ...


def requested(body: CallbackRequest, *, required: bool) -> tuple[str, dict[str, Any], str] | None:
    """The callback a body asks for, as (callback_type, config, the field it came in), from
    `callback_config` or mca-timer's `callback`; None when it gives neither and none is
    `required`. Giving both, or neither when one is required, is an ApiError (code 2)."""
    given = body.callback if body.callback is not None else body.callback_config
    if body.callback is not None and body.callback_config is not None:
        raise ApiError(
            Code.VALIDATION, "callback: give either callback_config or callback (mca-timer's form)"
        )
    if given is None:
        if required:
            raise ApiError(
                Code.VALIDATION, "callback_config: Field required (or mca-timer's callback)"
            )
        return None
    field = "callback_config" if body.callback is None else "callback"
    kind = body.callback_type or str(getattr(given, "type", "http"))
    return kind, given.model_dump(exclude_none=True), field


def tagged(callback_type: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The `callback` a response shows for a stored config (redacted already): its tagged object,
    with a `nats` subject also given as mca-timer's `topic` when it was not given as one."""
    shown = {"type": callback_type, **config}
    if callback_type == "nats" and "topic" not in shown and "subject" in shown:
        shown["topic"] = shown["subject"]
    return shown
