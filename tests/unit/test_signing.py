"""Signed callbacks (Standard Webhooks): the signature against the spec's published vector, the
secrets setting, and the headers a delivery carries. Verified with the `standardwebhooks` library,
not with our own code."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from timers.callbacks.http import HttpCallback, HttpConfig, request_headers
from timers.config import ConfigError, settings_from_env
from timers.signing import InvalidSecret, parse_secret, signature

# The example in the Standard Webhooks specification (and its reference libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def secret(fill: int, size: int = 32) -> str:
    return "whsec_" + base64.b64encode(bytes([fill]) * size).decode()


def test_the_signature_matches_the_specs_known_vector() -> None:
    key = parse_secret(SPEC_SECRET)
    assert signature((key,), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_several_secrets_sign_at_once_each_verifying_alone() -> None:
    old, new = secret(1), secret(2)
    body = json.dumps({"order": 42, "name": "café"}, ensure_ascii=False).encode()
    now = int(time.time())
    timer_id = uuid.uuid4()
    callback = HttpCallback(url="https://example.com/hook", payload={"order": 42})
    headers = request_headers(timer_id, callback, body, (parse_secret(old), parse_secret(new)), now)
    assert headers["webhook-id"] == str(timer_id)
    assert headers["webhook-timestamp"] == str(now)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for each in (old, new):
        assert Webhook(each).verify(body, headers) == {"order": 42, "name": "café"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret(3)).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body + b" ", headers)


def test_without_secrets_no_signature_headers_and_a_timers_own_are_dropped() -> None:
    callback = HttpCallback(
        url="https://example.com/hook",
        headers={"Webhook-Id": "forged", "webhook-signature": "v1,forged", "X-Mine": "kept"},
    )
    unsigned = request_headers(uuid.uuid4(), callback, b"{}")
    assert not {n.lower() for n in unsigned} & {"webhook-id", "webhook-signature"}
    assert unsigned["X-Mine"] == "kept"
    signed = request_headers(uuid.uuid4(), callback, b"{}", (parse_secret(secret(1)),))
    assert signed["webhook-signature"] != "v1,forged"
    assert "Webhook-Id" not in signed and "forged" not in signed.values()


@pytest.mark.parametrize("name", ["webhook-id", "Webhook-Timestamp", "WEBHOOK-SIGNATURE"])
def test_the_api_schema_refuses_a_timers_own_signature_headers(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} is set by the service"):
        HttpConfig.model_validate({"url": "https://example.com/hook", "headers": {name: "x"}})


def test_the_setting_takes_several_secrets_and_keeps_them_out_of_repr() -> None:
    settings = settings_from_env({"TIMERS_SIGNING_SECRETS": f"{secret(1)}, {secret(2, 64)}"})
    assert settings.signing_keys("default") == (bytes([1]) * 32, bytes([2]) * 64)
    assert "signing_secrets" not in repr(settings)
    # Unpadded base64 is accepted, as the reference libraries accept it.
    assert parse_secret(secret(5, 25).rstrip("=")) == bytes([5]) * 25
    assert settings_from_env({}).signing_keys("default") == ()


def test_a_principal_with_secrets_of_its_own_signs_with_those_alone() -> None:
    settings = settings_from_env(
        {"TIMERS_SIGNING_SECRETS": f"{secret(1)}, shop:{secret(2)}, shop:{secret(3)}"}
    )
    assert settings.signing_keys("shop") == (bytes([2]) * 32, bytes([3]) * 32)
    assert settings.signing_keys("default") == (bytes([1]) * 32,)
    assert settings.signing_keys("billing") == (bytes([1]) * 32,)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "secret 1: a secret must start with 'whsec_'"),
        (f"{secret(1)},whsec_not*base64", "secret 2: what follows 'whsec_' must be base64"),
        (secret(1, 16), "secret 1: a secret must be 24 to 64 bytes once decoded, got 16"),
        (secret(1, 65), "secret 1: a secret must be 24 to 64 bytes once decoded, got 65"),
    ],
)
def test_malformed_secrets_are_refused_naming_the_variable(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^TIMERS_SIGNING_SECRETS: {message}") as caught:
        settings_from_env({"TIMERS_SIGNING_SECRETS": raw})
    assert "MfKQ9r8" not in str(caught.value) and "not*base64" not in str(caught.value)
    with pytest.raises(InvalidSecret):
        parse_secret(raw.split(",")[-1])


def test_the_documented_receiver_verifies_a_signed_callback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    section = readme.split("### Signed callbacks", 1)[1].split("\n## ", 1)[0]
    [snippet] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len([line for line in snippet.splitlines() if line.strip()]) == 5
    monkeypatch.setenv("TIMERS_SIGNING_SECRET", secret(7))
    receiver: dict[str, Any] = {}
    exec(snippet, receiver)  # noqa: S102 - the documentation's own code
    callback = HttpCallback(url="https://example.com/hook", payload={"order": 42})
    body = b'{"order":42}'
    headers = request_headers(uuid.uuid4(), callback, body, (parse_secret(secret(7)),))
    assert receiver["verified"](body, headers) == {"order": 42}
    with pytest.raises(WebhookVerificationError):
        receiver["verified"](b'{"order":43}', headers)
