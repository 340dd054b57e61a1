"""Admission (pure): the rules every door admits a timer by, and the one error it raises naming the
field. The doors themselves are tested through the API (test_api*.py) and the Python API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from timers import admission
from timers.callbacks import CallbackRules
from timers.errors import InvalidTimer

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
WEEK = timedelta(days=7)
RULES = CallbackRules()
HOOK = {"type": "http", "url": "https://receiver.example/hook", "payload": {"order": 42}}


def test_eta_or_countdown_or_neither_says_when() -> None:
    assert admission.requested_time(None, None, NOW) == NOW
    assert admission.requested_time(None, 90, NOW) == NOW + timedelta(seconds=90)
    paris = datetime(2030, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    at = admission.requested_time(paris, None, NOW)
    assert at == NOW and at.tzinfo is UTC


@pytest.mark.parametrize(
    ("eta", "countdown", "message"),
    [
        (NOW, 10, "eta, countdown: give one of them, not both"),
        (None, "10", "countdown: a number of seconds"),
        (None, True, "countdown: a number of seconds"),
        ("2030-01-01", None, "eta: a timezone-aware datetime"),
        (datetime(2030, 1, 1), None, "eta must be timezone-aware"),
    ],
)
def test_a_time_asked_for_wrongly_is_refused_naming_the_field(
    eta: Any, countdown: Any, message: str
) -> None:
    with pytest.raises(InvalidTimer, match=message):
        admission.requested_time(eta, countdown, NOW)


def test_now_has_a_second_of_grace_and_the_future_a_limit() -> None:
    admission.check_due(NOW - timedelta(milliseconds=999), NOW, WEEK, "execute_at")
    admission.check_due(NOW + WEEK, NOW, WEEK, "execute_at")
    with pytest.raises(InvalidTimer, match=r"^execute_at: .* is in the past \(server time "):
        admission.check_due(NOW - timedelta(seconds=2), NOW, WEEK, "execute_at")
    with pytest.raises(InvalidTimer, match=r"^eta: .* is more than 7 days ahead"):
        admission.due_time(None, WEEK.total_seconds() + 1, NOW, WEEK)
    far = datetime.max.replace(tzinfo=timezone(timedelta(hours=-1)))  # past year 9999 in UTC
    with pytest.raises(InvalidTimer, match="days ahead"):
        admission.check_due(far, NOW, WEEK, "execute_at")


def test_a_timer_is_admitted_with_its_callback_in_its_stored_form() -> None:
    new = admission.admit(
        execute_at=NOW,
        callback_type="http",
        callback_config=HOOK,
        rules=RULES,
        metadata={"tenant": "acme"},
        retry={"max_attempts": 3},
        owner="shop",
    )
    assert new.callback_type == "http" and new.callback_config["url"] == HOOK["url"]
    assert new.metadata == {"tenant": "acme"} and new.owner == "shop"
    assert new.retry is not None and new.retry["max_attempts"] == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"callback_type": "sms"}, "callback_type: must be one of"),
        ({"callback_config": {**HOOK, "url": "ftp://x"}, "field": "callback"}, "callback.url"),
        ({"metadata": {"n": float("nan")}}, "metadata.n: numbers must be finite"),
        ({"metadata": {f"k{i}": i for i in range(33)}}, "metadata: 33 keys"),
        ({"retry": {"max_attempts": 1000}}, "retry.max_attempts"),
        ({"callback_config": {**HOOK, "payload": "x" * 70_000}}, "timer: "),
    ],
)
def test_whatever_is_wrong_is_one_error_naming_its_field(
    fields: dict[str, Any], message: str
) -> None:
    asked: dict[str, Any] = {"callback_type": "http", "callback_config": HOOK, **fields}
    with pytest.raises(InvalidTimer, match=message.replace("(", r"\(")):
        admission.admit(execute_at=NOW, rules=RULES, **asked)


class Config(BaseModel):
    type: str = "http"
    url: str = str(HOOK["url"])


@dataclass
class Body:
    callback_type: str | None = None
    callback_config: BaseModel | None = None
    callback: BaseModel | None = None


def test_the_callback_comes_in_our_form_or_mca_timers_never_both() -> None:
    ours = admission.requested_callback(Body(callback_config=Config()), required=True)
    assert ours == ("http", {"type": "http", "url": HOOK["url"]}, "callback_config")
    theirs = admission.requested_callback(Body(callback=Config()), required=True)
    assert theirs is not None and theirs[2] == "callback"
    assert admission.requested_callback(Body(), required=False) is None
    with pytest.raises(InvalidTimer, match="callback_config: Field required"):
        admission.requested_callback(Body(), required=True)
    with pytest.raises(InvalidTimer, match="callback: give either callback_config or callback"):
        admission.requested_callback(
            Body(callback=Config(), callback_config=Config()), required=True
        )
