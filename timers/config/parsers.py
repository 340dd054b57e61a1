"""Parsers of settings: the raw text of a variable → its value, or ConfigError naming it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from timers.models import DEFAULT_OWNER


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


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


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _optional_count(name: str, raw: str) -> int | None:
    return None if raw.strip() == "0" else _count(name, raw)


PRINCIPAL_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_PRINCIPAL = DEFAULT_OWNER


def split_principal(entry: str) -> tuple[str, str]:
    """`name:value` → (name, value); a plain `value` (or one whose part before the first colon is
    no principal name) belongs to the principal `default`."""
    name, colon, rest = entry.partition(":")
    if colon and PRINCIPAL_PATTERN.match(name.strip()) and rest.strip():
        return name.strip(), rest.strip()
    return DEFAULT_PRINCIPAL, entry.strip()


def _principal_names(name: str, raw: str) -> tuple[str, ...]:
    names = _keys(name, raw)
    for principal in names:
        if not PRINCIPAL_PATTERN.match(principal):
            raise ConfigError(f"{name}: {principal!r} is not a principal name ([A-Za-z0-9_.-])")
    return names


def _retry_policy(name: str, raw: str) -> Any:
    import json

    from timers.models import InvalidField
    from timers.retries import RetryPolicy

    try:
        return RetryPolicy.from_config(json.loads(raw), name)
    except ValueError as exc:  # bad JSON, or InvalidField naming the field
        message = str(exc) if isinstance(exc, InvalidField) else f"{name}: not JSON ({exc})"
        raise ConfigError(message) from None


def _signing_secrets(name: str, raw: str) -> tuple[tuple[str | None, bytes], ...]:
    """(principal, key) pairs: `name:whsec_…` signs only that principal's callbacks, a plain
    `whsec_…` (principal None) those of every principal that has none of its own."""
    from timers.signing import InvalidSecret, parse_secret

    secrets: list[tuple[str | None, bytes]] = []
    for index, text in enumerate(t.strip() for t in raw.split(",") if t.strip()):
        owner, secret = split_principal(text)
        try:
            secrets.append((None if secret == text else owner, parse_secret(secret)))
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
