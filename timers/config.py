"""Settings, read from the environment (and a `.env` file) by `load_settings()`.

`SETTINGS` is the one table of them (variable, parser, default, meaning): `Settings` takes its
defaults from it, the commands' `--help` lists it, and a test checks the README's configuration
table against it. Nothing here runs at import time: every entry point calls `load_settings()` and
passes the result down, so tests build their own settings.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


# -- parsers: raw text of a variable → value, or ConfigError naming it -------------------------


def _text(name: str, raw: str) -> str:
    return raw


def _upper(name: str, raw: str) -> str:
    return raw.strip().upper()


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _seconds(name: str, raw: str, *, allow_zero: bool = False) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number of seconds, got {raw!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigError(f"{name} must be {bound} seconds, got {raw!r}")
    return value


def _seconds_or_zero(name: str, raw: str) -> float:
    return _seconds(name, raw, allow_zero=True)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `90m`, `45s` or a plain number of seconds; ValueError otherwise."""
    raw = text.strip().lower()
    scale = _UNITS.get(raw[-1:], 0)
    number = raw[:-1] if scale else raw
    value = float(number)  # ValueError for anything else
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"not a duration: {text!r}")
    return value * (scale or 1)


def _duration(name: str, raw: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must be a duration such as 7d, 12h, 90m or 3600 (seconds), got {raw!r}"
        ) from None


def _optional_port(name: str, raw: str) -> int | None:
    return None if raw.strip() in ("", "0") else _port(name, raw)


def _count(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


def _port(name: str, raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name} must be between 1 and 65535, got {port}")
    return port


def _networks(name: str, raw: str) -> tuple[Any, ...]:
    from timers.outbound import parse_networks

    try:
        return parse_networks(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _keys(name: str, raw: str) -> tuple[str, ...]:
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def _retry_policy(name: str, raw: str) -> Any:
    import json

    from timers.models import InvalidCallback
    from timers.retries import RetryPolicy

    try:
        return RetryPolicy.from_config(json.loads(raw), name)
    except ValueError as exc:  # bad JSON, or InvalidCallback naming the field
        message = str(exc) if isinstance(exc, InvalidCallback) else f"{name}: not JSON ({exc})"
        raise ConfigError(message) from None


def _signing_secrets(name: str, raw: str) -> tuple[bytes, ...]:
    from timers.signing import InvalidSecret, parse_secret

    secrets = []
    for index, text in enumerate(t.strip() for t in raw.split(",") if t.strip()):
        try:
            secrets.append(parse_secret(text))
        except InvalidSecret as exc:
            # Never echo the secret itself: only where it is in the list.
            raise ConfigError(f"{name}: secret {index + 1}: {exc}") from None
    return tuple(secrets)


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


@dataclass(frozen=True)
class Setting:
    variable: str
    attribute: str  # on Settings
    parse: Callable[[str, str], Any]
    default: Any
    meaning: str
    shown_default: str = ""  # how README and --help show the default, when not the value itself

    @property
    def default_text(self) -> str:
        if self.shown_default:
            return self.shown_default
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)


DEFAULT_NATS_URL = "nats://127.0.0.1:4222"

SETTINGS: tuple[Setting, ...] = (
    Setting("DATABASE_URL", "database_url", _text, None,
            "`postgresql://user:pass@host:5432/db`", "embedded (dev)"),
    Setting("REDIS_URL", "redis_url", _text, None, "Celery broker", "embedded (dev)"),
    Setting("CELERY_BROKER_URL", "celery_broker_url", _text, None,
            "overrides `REDIS_URL` as the broker (e.g. `amqp://…` for RabbitMQ)", "—"),
    Setting("TIMERS_TASK_BROKER_URL", "task_broker_url", _text, None,
            "where `celery` callbacks publish their task messages", "the timers broker"),
    Setting("TIMERS_NATS_URL", "nats_url", _text, None,
            "the NATS server `nats` callbacks publish to (`timers dev` starts an embedded one, "
            "with JetStream, when this is unset and nothing listens on 127.0.0.1:4222)",
            f"`{DEFAULT_NATS_URL}`"),
    Setting("API_KEY", "api_key", _text, None,
            "value of the `X-API-Key` header, at least 32 characters",
            "generated by `timers dev`; else required"),
    Setting("API_KEYS", "extra_api_keys", _keys, (),
            "more accepted keys, comma-separated, each at least 32 characters (to rotate keys "
            "without downtime: add the new one, move clients, remove the old one)", "none"),
    Setting("PORT", "port", _port, 8080, "API port"),
    Setting("TIMERS_HOME", "home", _path, Path(".timers"),
            "where `timers dev` keeps embedded data and the generated key", "`./.timers`"),
    Setting("TIMERS_MODE", "mode", _choice("default", "seed"), "default",
            "`seed` runs the scheduler as the original polling design did (no notifications or "
            "wake-ups, one `UPDATE` and one task per timer), for comparison"),
    Setting("TIMERS_LOAD_INTERVAL", "load_interval", _seconds, 30.0,
            "seconds between full reloads of the cache (each also recovers stranded timers)"),
    Setting("TIMERS_EXECUTE_INTERVAL", "execute_interval", _seconds, 1.0,
            "seconds between execution ticks (fixed rate)"),
    Setting("TIMERS_LOOKAHEAD", "lookahead", _seconds_or_zero, 60.0,
            "seconds into the future the cache covers"),
    Setting("TIMERS_RECOVERY_WINDOW", "recovery_window", _seconds_or_zero, 300.0,
            "seconds into the past the loader still picks up overdue timers"),
    Setting("TIMERS_MISFIRE_POLICY", "misfire_policy", _choice("fire", "skip"), "fire",
            "timers overdue by more than the recovery window when a scheduler sees them: `fire` "
            "late, or `skip` (mark `failed`, `last_error` `missed: …`)"),
    Setting("TIMERS_MAX_DELAY", "max_delay", _seconds, 315_576_000.0,
            "seconds ahead a timer may be set at most", "315576000 (10 years)"),
    Setting("TIMERS_CALLBACK_TIMEOUT", "callback_timeout", _seconds, 30.0,
            "seconds one HTTP callback may take in all (connect, send, wait, read)"),
    Setting("TIMERS_ALLOWED_NETWORKS", "allowed_networks", _networks, (),
            "comma-separated CIDRs that callbacks may reach besides public addresses (e.g. "
            "`127.0.0.0/8` for a receiver on this host); loopback, private, link-local and other "
            "non-public addresses are refused otherwise", "none"),
    Setting("TIMERS_DEFAULT_RETRY", "default_retry", _retry_policy, None,
            "the retry policy of timers that give none, as JSON, e.g. `{\"max_attempts\": 5, "
            "\"backoff\": \"exponential\", \"initial_delay\": 1, \"max_delay\": 3600}`",
            "one attempt"),
    Setting("TIMERS_SIGNING_SECRETS", "signing_secrets", _signing_secrets, (),
            "comma-separated `whsec_…` secrets (base64 of 24 to 64 bytes after the prefix): "
            "every `http` callback is then signed as Standard Webhooks define (`webhook-id`, "
            "`webhook-timestamp`, `webhook-signature`), once per secret, so secrets rotate "
            "without a gap", "none (unsigned)"),
    Setting("TIMERS_MAX_IN_FLIGHT_PER_HOST", "max_in_flight_per_host", _count, 64,
            "deliveries at once from one worker process to one receiver (scheme, host and "
            "port); the rest wait their turn"),
    Setting("TIMERS_ENQUEUE_TIMEOUT", "enqueue_timeout", _seconds, 15.0,
            "seconds after which a claimed timer that no worker has started is fired again, if "
            "the callback queue is idle (a message merely waiting in a long queue is not lost)"),
    Setting("TIMERS_DELIVERY_LEASE", "delivery_lease", _seconds, 15.0,
            "seconds a started delivery belongs to its worker process; renewed every third of "
            "it while the delivery runs, so a dead worker's deliveries are fired again within a "
            "lease plus a load period"),
    Setting("TIMERS_REDELIVERY_TIMEOUT", "redelivery_timeout", _seconds, 3600.0,
            "Redis's visibility timeout for an unacknowledged message; messages are acknowledged "
            "once their deliveries have started, so it matters only for a worker that dies while "
            "starting them"),
    Setting("CELERY_WORKER_CONCURRENCY", "worker_concurrency", _count, None,
            "pool processes per `celery worker`, each with its own delivery engine", "CPUs"),
    Setting("TIMERS_FLOWER_PORT", "flower_port", _port, 5555, "Flower's port under `timers dev`"),
    Setting("TIMERS_RECEIVER_PORT", "receiver_port", _port, 8081,
            "the demo receiver's port under `timers dev`"),
    Setting("TIMERS_RETENTION", "retention", _duration, 604_800.0,
            "how long finished timers (completed, failed, canceled) are kept, e.g. `7d`, `12h`; "
            "the scheduler deletes older ones in small batches; `0` keeps them for ever", "7d"),
    Setting("TIMERS_METRICS_PORT", "metrics_port", _optional_port, None,
            "port of the Prometheus `/metrics` endpoint of the scheduler or of a worker (the "
            "sum over its pool processes); the API serves `/metrics` on its own port", "off"),
    Setting("TIMERS_FLOWER_URL", "flower_url", _text, None,
            "Flower's address as a browser reaches it, for the links of the timers page",
            "no links"),
    Setting("LOG_LEVEL", "log_level", _upper, "INFO", "`DEBUG`, `INFO`, `WARNING` or `ERROR`"),
    Setting("LOG_FORMAT", "log_format", _choice("text", "json"), "text",
            "`json`: one JSON object per log line (with `timer_id` where there is one)"),
)  # fmt: skip

_DEFAULTS = {s.attribute: s.default for s in SETTINGS}
MIN_API_KEY_LENGTH = 32

# What the `seed` mode changes: the original design's one statement and one task per timer.
SEED_CLAIM_BATCH, CLAIM_BATCH = 1, 500
SEED_CALLBACKS_PER_TASK, CALLBACKS_PER_TASK = 1, 50


def _default(attribute: str) -> Any:
    return field(default=_DEFAULTS[attribute])


@dataclass(frozen=True)
class Settings:
    database_url: str | None = _default("database_url")
    redis_url: str | None = _default("redis_url")
    celery_broker_url: str | None = _default("celery_broker_url")
    task_broker_url: str | None = _default("task_broker_url")
    nats_url: str | None = _default("nats_url")
    api_key: str | None = _default("api_key")
    extra_api_keys: tuple[str, ...] = _default("extra_api_keys")
    max_delay: float = _default("max_delay")
    port: int = _default("port")
    home: Path = _default("home")
    mode: str = _default("mode")
    load_interval: float = _default("load_interval")
    execute_interval: float = _default("execute_interval")
    lookahead: float = _default("lookahead")
    recovery_window: float = _default("recovery_window")
    misfire_policy: str = _default("misfire_policy")
    callback_timeout: float = _default("callback_timeout")
    default_retry: Any = _default("default_retry")
    allowed_networks: tuple[Any, ...] = _default("allowed_networks")
    # Key bytes; kept out of repr so that settings never print them.
    signing_secrets: tuple[bytes, ...] = field(default=_DEFAULTS["signing_secrets"], repr=False)
    max_in_flight_per_host: int = _default("max_in_flight_per_host")
    enqueue_timeout: float = _default("enqueue_timeout")
    delivery_lease: float = _default("delivery_lease")
    redelivery_timeout: float = _default("redelivery_timeout")
    worker_concurrency: int | None = _default("worker_concurrency")
    flower_port: int = _default("flower_port")
    receiver_port: int = _default("receiver_port")
    retention: float = _default("retention")
    metrics_port: int | None = _default("metrics_port")
    flower_url: str | None = _default("flower_url")
    log_level: str = _default("log_level")
    log_format: str = _default("log_format")

    @property
    def listen(self) -> bool:
        """React to changes at once (LISTEN/NOTIFY) and wake at each timer's due time; the seed
        design polls (loads every load_interval, ticks every execute_interval)."""
        return self.mode != "seed"

    @property
    def claim_batch_size(self) -> int:
        """Due timers claimed per UPDATE."""
        return SEED_CLAIM_BATCH if self.mode == "seed" else CLAIM_BATCH

    @property
    def callbacks_per_task(self) -> int:
        """Timers due together that travel in one Celery message."""
        return SEED_CALLBACKS_PER_TASK if self.mode == "seed" else CALLBACKS_PER_TASK

    @property
    def task_broker(self) -> str | None:
        """Where `celery` callbacks publish: TIMERS_TASK_BROKER_URL, else the timers broker."""
        return self.task_broker_url or self.broker_url

    @property
    def nats_server(self) -> str:
        """Where `nats` callbacks publish: TIMERS_NATS_URL, else NATS on this host."""
        return self.nats_url or DEFAULT_NATS_URL

    @property
    def broker_url(self) -> str | None:
        """The Celery broker: `CELERY_BROKER_URL` if set, else `REDIS_URL`."""
        return self.celery_broker_url or self.redis_url

    @property
    def api_keys(self) -> tuple[str, ...]:
        """Every accepted API key: `API_KEY` and `API_KEYS`."""
        return tuple(dict.fromkeys(k for k in (self.api_key, *self.extra_api_keys) if k))

    def require_api_keys(self) -> tuple[str, ...]:
        """The API keys, each long enough; raises ConfigError naming the variable."""
        keys = self.api_keys
        if not keys:
            raise ConfigError(
                "API_KEY is not set: every route but /health needs an X-API-Key to compare"
            )
        for key in keys:
            if len(key) < MIN_API_KEY_LENGTH:
                variable = "API_KEY" if key == self.api_key else "API_KEYS"
                raise ConfigError(
                    f"{variable}: a key must be at least {MIN_API_KEY_LENGTH} characters (got "
                    f"{len(key)}); make one with: python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))'"
                )
        return keys

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


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Build settings from a mapping of environment variables; raise ConfigError on bad values.
    An empty variable counts as unset."""
    values = {}
    for setting in SETTINGS:
        raw = env.get(setting.variable)
        if raw is not None and raw.strip() != "":
            values[setting.attribute] = setting.parse(setting.variable, raw)
    return Settings(**values)


def load_settings(env_file: str | os.PathLike[str] = ".env") -> Settings:
    """Settings from the process environment, with values from `env_file` where the environment has none."""
    merged: dict[str, str] = {}
    if Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return settings_from_env(merged)


def markdown_table() -> str:
    """The settings table as the README shows it."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{s.variable}` | {s.default_text} | {s.meaning} |" for s in SETTINGS]
    return "\n".join(lines)


def environment_help() -> str:
    """The settings table as text, for a command's `--help`."""
    width = max(len(s.variable) for s in SETTINGS)
    lines = ["environment variables (a .env file in the working directory is read too):"]
    for s in SETTINGS:
        text = f"{s.meaning} [default: {s.default_text}]".replace("`", "")
        wrapped = textwrap.wrap(text, 100 - width - 4) or [""]
        lines.append(f"  {s.variable:<{width}}  {wrapped[0]}")
        lines += [f"  {'':<{width}}  {more}" for more in wrapped[1:]]
    return "\n".join(lines)


if __name__ == "__main__":
    # `python -m timers.config` prints the README's configuration table.
    print(markdown_table())
