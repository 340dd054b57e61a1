"""Value objects and settings: validation without any service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from timers.callbacks.http import HttpCallback
from timers.config import ConfigError, settings_from_env
from timers.models import InvalidField, Timer, TimerStatus, uuid7

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_uuid7_is_version_7_and_sorts_by_creation() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_timer_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="execute_at must be timezone-aware"):
        Timer(
            id=uuid7(),
            execute_at=datetime(2030, 1, 1),
            callback_type="http",
            callback_config={},
            status=TimerStatus.PENDING,
            created_at=T0,
            updated_at=T0,
        )


def test_timer_normalises_to_utc_and_is_immutable() -> None:
    plus_two = timezone(timedelta(hours=2))
    timer = Timer(
        id=uuid7(),
        execute_at=datetime(2030, 1, 1, 14, tzinfo=plus_two),
        callback_type="http",
        callback_config={},
        # A status's text is taken too.
        status="pending",  # type: ignore[arg-type]
        created_at=T0,
        updated_at=T0,  # type: ignore[arg-type]
    )
    assert timer.execute_at == datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert timer.execute_at.tzinfo == UTC
    assert timer.status is TimerStatus.PENDING
    with pytest.raises(AttributeError):
        timer.status = TimerStatus.FAILED  # type: ignore[misc]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ("http://x", "callback_config"),
        ({"url": "ftp://x/y"}, "callback_config.url"),
        ({"url": "http://exa mple.com"}, "callback_config.url"),
        ({"url": "http://x:99999/"}, "callback_config.url"),
        ({"url": "https://"}, "callback_config.url"),
        ({"type": "sqs", "url": "http://x"}, "callback_config.type"),
        ({"url": "http://x", "headers": {"": "v"}}, "callback_config.headers"),
        ({"url": "http://x", "headers": {"A": None}}, "callback_config.headers.A"),
        ({"url": "http://x", "headers": {"A": "b\x00"}}, "callback_config.headers.A"),
    ],
)
def test_http_callback_rejects_bad_config(config: object, field: str) -> None:
    with pytest.raises(InvalidField) as info:
        HttpCallback.from_config(config)
    assert info.value.field == field


def test_http_callback_round_trips() -> None:
    config = {"type": "http", "url": "https://h/p?q=1", "headers": {"X-A": "1"}, "payload": [1]}
    assert HttpCallback.from_config(config).to_config() == config


def test_settings_defaults_match_the_spec() -> None:
    settings = settings_from_env({})
    assert (settings.port, settings.load_interval, settings.execute_interval) == (8080, 30, 1)
    assert (settings.lookahead, settings.recovery_window, settings.callback_timeout) == (
        60,
        300,
        30,
    )
    assert settings.broker_url is None


def test_celery_broker_url_overrides_redis_url() -> None:
    settings = settings_from_env({"REDIS_URL": "redis://a", "CELERY_BROKER_URL": "amqp://b"})
    assert settings.broker_url == "amqp://b"
    assert settings_from_env({"REDIS_URL": "redis://a"}).broker_url == "redis://a"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "http"}, "PORT must be an integer"),
        ({"PORT": "70000"}, "PORT must be between"),
        ({"TIMERS_EXECUTE_INTERVAL": "0"}, "TIMERS_EXECUTE_INTERVAL must be more than zero"),
        ({"TIMERS_LOOKAHEAD": "-1"}, "TIMERS_LOOKAHEAD must be zero or more"),
        ({"TIMERS_CALLBACK_TIMEOUT": "soon"}, "TIMERS_CALLBACK_TIMEOUT must be a number"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_env(env)


def test_dotenv_file_fills_in_what_the_environment_lacks(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from timers.config import load_settings

    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9999\nTIMERS_LOOKAHEAD=5\n")
    monkeypatch.setenv("PORT", "7000")
    monkeypatch.delenv("TIMERS_LOOKAHEAD", raising=False)
    settings = load_settings(env_file)
    assert settings.port == 7000 and settings.lookahead == 5
