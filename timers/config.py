"""Settings, read from the environment (and a `.env` file) by `load_settings()`.

Nothing here runs at import time: every entry point calls `load_settings()` and passes the result
down, so tests build their own settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

DEFAULT_PORT = 8080


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    celery_broker_url: str | None = None
    api_key: str | None = None
    port: int = DEFAULT_PORT
    home: Path = Path(".timers")
    load_interval: float = 30.0
    execute_interval: float = 1.0
    lookahead: float = 60.0
    recovery_window: float = 300.0
    callback_timeout: float = 30.0
    log_level: str = "INFO"
    # React to changes at once (LISTEN/NOTIFY) and wake at each timer's due time; off leaves the
    # seed design's polling alone (loads every load_interval, ticks every execute_interval).
    listen: bool = True
    # Due timers claimed per UPDATE (1 = one statement per timer, as the seed design did).
    claim_batch_size: int = 500
    # Timers due together that travel in one Celery message and are delivered concurrently.
    callbacks_per_task: int = 50
    # Recovery: a claim that no worker started within enqueue_timeout (while the callback queue is
    # idle) is fired again, and so is a started delivery whose lease (delivery_lease, renewed while
    # it runs) lapsed. Redis hands an unacknowledged message to another worker after
    # redelivery_timeout (messages are acknowledged once their deliveries started).
    enqueue_timeout: float = 15.0
    delivery_lease: float = 15.0
    redelivery_timeout: float = 3600.0
    misfire_policy: str = "fire"
    # Deliveries at once from one worker process to one receiver (scheme, host and port).
    max_in_flight_per_host: int = 64
    # Ports of the extra processes `timers dev` runs.
    flower_port: int = 5555
    receiver_port: int = 8081

    @property
    def broker_url(self) -> str | None:
        """The Celery broker: `CELERY_BROKER_URL` if set, else `REDIS_URL`."""
        return self.celery_broker_url or self.redis_url

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "DATABASE_URL is not set (e.g. postgresql://user:pass@host:5432/timers)"
            )
        return self.database_url

    def require_broker_url(self) -> str:
        if not self.broker_url:
            raise ConfigError(
                "REDIS_URL (or CELERY_BROKER_URL) is not set (e.g. redis://localhost:6379/0)"
            )
        return self.broker_url


def _seconds(
    env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigError(f"{name} must be {bound} seconds, got {raw!r}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name} must be between 1 and 65535, got {port}")
    return port


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or choices[0]).strip().lower()
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be on or off (1/0, true/false), got {raw!r}")


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Build settings from a mapping of environment variables; raise ConfigError on bad values."""
    return Settings(
        database_url=env.get("DATABASE_URL") or None,
        redis_url=env.get("REDIS_URL") or None,
        celery_broker_url=env.get("CELERY_BROKER_URL") or None,
        api_key=env.get("API_KEY") or None,
        port=_port(env, "PORT", DEFAULT_PORT),
        flower_port=_port(env, "TIMERS_FLOWER_PORT", 5555),
        receiver_port=_port(env, "TIMERS_RECEIVER_PORT", 8081),
        home=Path(env.get("TIMERS_HOME") or ".timers"),
        load_interval=_seconds(env, "TIMERS_LOAD_INTERVAL", 30.0),
        execute_interval=_seconds(env, "TIMERS_EXECUTE_INTERVAL", 1.0),
        lookahead=_seconds(env, "TIMERS_LOOKAHEAD", 60.0, allow_zero=True),
        recovery_window=_seconds(env, "TIMERS_RECOVERY_WINDOW", 300.0, allow_zero=True),
        callback_timeout=_seconds(env, "TIMERS_CALLBACK_TIMEOUT", 30.0),
        log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
        listen=_flag(env, "TIMERS_LISTEN", True),
        claim_batch_size=_count(env, "TIMERS_CLAIM_BATCH", 500),
        callbacks_per_task=_count(env, "TIMERS_CALLBACKS_PER_TASK", 50),
        enqueue_timeout=_seconds(env, "TIMERS_ENQUEUE_TIMEOUT", 15.0),
        delivery_lease=_seconds(env, "TIMERS_DELIVERY_LEASE", 15.0),
        max_in_flight_per_host=_count(env, "TIMERS_MAX_IN_FLIGHT_PER_HOST", 64),
        redelivery_timeout=_seconds(env, "TIMERS_REDELIVERY_TIMEOUT", 3600.0),
        misfire_policy=_choice(env, "TIMERS_MISFIRE_POLICY", ("fire", "skip")),
    )


def load_settings(env_file: str | os.PathLike[str] = ".env") -> Settings:
    """Settings from the process environment, with values from `env_file` where the environment has none."""
    merged: dict[str, str] = {}
    if Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return settings_from_env(merged)
