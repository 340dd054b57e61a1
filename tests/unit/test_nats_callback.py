"""The `nats` callback kind's config: what it accepts and refuses (each refusal naming the field),
without any service."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from timers import callbacks
from timers.callbacks import CallbackRules
from timers.callbacks.nats import NatsCallback, NatsConfig, message_headers
from timers.config import settings_from_env
from timers.models import InvalidField

RULES = CallbackRules()  # the defaults: any subject but the reserved ones


def nats(**config: object) -> dict[str, object]:
    return {"type": "nats", "subject": "orders.expired", **config}


@pytest.mark.parametrize(
    "subject",
    [
        "orders",
        "orders.expired",
        "a.b.c.d",
        "shop-1.orders_v2.expired!",
        "_INBOX",
        "INBOX.abc",
        "_inbox.abc",
        "a.$KV.b",
        "x" * 255,
    ],
)
def test_valid_subjects_are_accepted(subject: str) -> None:
    callback = callbacks.parse("nats", nats(subject=subject), rules=RULES)
    assert callback.to_config()["subject"] == subject
    NatsConfig.model_validate(nats(subject=subject))


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        ("orders.*", "wildcards"),
        ("orders.>", "wildcards"),
        (">", "wildcards"),
        ("orders.ex*pired", "wildcards"),
        ("orders..expired", "tokens"),
        (".orders", "tokens"),
        ("orders.", "tokens"),
        ("orders expired", "tokens"),
        ("orders.\texpired", "tokens"),
        ("orders.\r\nPUB x 1", "tokens"),
        ("ordérs", "tokens"),
        ("x" * 256, "at most 255"),
        ("", "required"),
        (None, "required"),
        (42, "required"),
        ("$JS.API.STREAM.DELETE.ORDERS", "reserved"),
        ("$SYS.REQ.SERVER.PING", "reserved"),
        ("$KV.bucket.key", "reserved"),
        ("$O.bucket.chunk", "reserved"),
        ("$JSC.x", "reserved"),
        ("$anything", "reserved"),
        ("_INBOX.abc.def", "reserved"),
        ("_R_.abc.def", "reserved"),
    ],
)
def test_bad_subjects_are_refused_naming_the_field(subject: object, why: str) -> None:
    with pytest.raises(InvalidField) as info:
        callbacks.parse("nats", nats(subject=subject), rules=RULES)
    assert info.value.field == "callback_config.subject"
    assert why in str(info.value)


@pytest.mark.parametrize(
    "subject", ["orders.*", "orders.>", "a..b", "a b", "", "x" * 256, "ordérs"]
)
def test_the_api_schema_refuses_malformed_subjects_too(subject: str) -> None:
    with pytest.raises(ValidationError):
        NatsConfig.model_validate(nats(subject=subject))


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (nats(headers={"": "v"}), "callback_config.headers"),
        (nats(headers={"Bad Name": "v"}), "callback_config.headers"),
        (nats(headers={"X-A:": "v"}), "callback_config.headers"),
        (nats(headers={"X-A": None}), "callback_config.headers.X-A"),
        (nats(headers={"X-A": 1}), "callback_config.headers.X-A"),
        (nats(headers={"X-A": "line\r\nInjected: 1"}), "callback_config.headers.X-A"),
        (nats(headers={"X-A": "café"}), "callback_config.headers.X-A"),
        (nats(headers=["X-A"]), "callback_config.headers"),
        (nats(jetstream="yes"), "callback_config.jetstream"),
        (nats(jetstream=1), "callback_config.jetstream"),
        (nats(payload={"n": float("nan")}), "callback_config.payload.n"),
        (nats(payload="a\x00b"), "callback_config.payload"),
        (nats(url="http://x"), "callback_config"),
        (nats(stream="ORDERS"), "callback_config"),
        ({"type": "http", "subject": "a"}, "callback_config.type"),
        ("orders.expired", "callback_config"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(config: object, field: str) -> None:
    with pytest.raises(InvalidField) as info:
        NatsCallback.from_config(config)
    assert info.value.field == field


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(InvalidField, match="unknown field 'stream'"):
        callbacks.parse("nats", nats(stream="ORDERS"), rules=RULES)
    with pytest.raises(ValidationError):
        NatsConfig.model_validate(nats(stream="ORDERS"))


def test_a_config_round_trips_with_its_defaults_filled_in() -> None:
    config = nats(payload={"order": 42}, headers={"Tenant": "acme"}, jetstream=True)
    assert NatsCallback.from_config(config).to_config() == config
    assert NatsCallback.from_config(nats()).to_config() == nats(
        headers={}, payload=None, jetstream=False
    )


@pytest.mark.parametrize(
    "name",
    ["Nats-Msg-Id", "nats-msg-id", "Nats-Expected-Stream", "NATS-Rollup", "Nats-TTL", "KV-Operation",
     "kv-operation", "Kv-Anything"],
)  # fmt: skip
def test_nats_and_kv_headers_are_reserved(name: str) -> None:
    with pytest.raises(InvalidField) as info:
        callbacks.parse("nats", nats(headers={name: "x"}), rules=RULES)
    assert info.value.field == f"callback_config.headers.{name}"
    assert "reserved" in info.value.reason


def test_other_headers_that_look_alike_are_taken() -> None:
    headers = {"X-Nats-Note": "a", "Natsu": "b", "KVStore": "c", "Tenant": "acme"}
    callback = callbacks.parse("nats", nats(headers=headers), rules=RULES)
    assert callback.to_config()["headers"] == headers


@pytest.mark.parametrize(
    ("subject", "allowed"),
    [
        ("orders.expired", True),
        ("orders.eu.expired", True),
        ("billing.invoice.due", True),
        ("billing.invoice", False),
        ("ordersX.expired", False),
        ("Orders.expired", False),
        ("shipping.late", False),
    ],
)
def test_with_subject_prefixes_a_subject_must_start_with_one(subject: str, allowed: bool) -> None:
    rules = CallbackRules(nats_subjects=("orders.", "billing.invoice."))
    if allowed:
        assert callbacks.parse("nats", nats(subject=subject), rules=rules)
        return
    with pytest.raises(InvalidField) as info:
        callbacks.parse("nats", nats(subject=subject), rules=rules)
    assert info.value.field == "callback_config.subject"
    assert "TIMERS_NATS_SUBJECTS" in info.value.reason


def test_reserved_subjects_stay_refused_whatever_the_prefixes() -> None:
    rules = CallbackRules(nats_subjects=("$KV.", "_INBOX.", "$"))
    for subject in ("$KV.bucket.key", "_INBOX.abc"):
        with pytest.raises(InvalidField, match="reserved"):
            callbacks.parse("nats", nats(subject=subject), rules=rules)


def test_the_timer_id_headers_are_set_by_the_service() -> None:
    timer_id = uuid.uuid4()
    callback = NatsCallback.from_config(nats(headers={"X-TIMER-ID": "mine", "Tenant": "acme"}))
    assert message_headers(timer_id, callback) == {
        "Tenant": "acme",
        "Nats-Msg-Id": str(timer_id),
        "X-Timer-Id": str(timer_id),
    }


def test_the_nats_server_defaults_to_this_host() -> None:
    assert settings_from_env({}).nats_server == "nats://127.0.0.1:4222"
    settings = settings_from_env({"TIMERS_NATS_URL": "nats://nats.internal:4222"})
    assert settings.nats_server == "nats://nats.internal:4222"
