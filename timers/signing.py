"""Signed callbacks, as Standard Webhooks (https://www.standardwebhooks.com) defines them.

Every signed delivery carries `webhook-id` (the timer id, the same on every attempt),
`webhook-timestamp` (Unix seconds when it was sent) and `webhook-signature`: one `v1,<base64>`
per secret, space-separated, each the HMAC-SHA256 of `{id}.{timestamp}.{body}` under that secret.
Several secrets sign at once, so a receiver can move to a new one without a gap. Any Standard
Webhooks library verifies them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"
# The spec's advice for a secret's length; shorter ones are too easy to guess.
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
# The headers a signed delivery sets; a timer can't give its own.
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class InvalidSecret(ValueError):
    """A secret that is not `whsec_` followed by 24 to 64 bytes in base64."""


def parse_secret(text: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret (padding optional); raises InvalidSecret."""
    if not text.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"a secret must start with {SECRET_PREFIX!r}")
    encoded = text[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret(f"what follows {SECRET_PREFIX!r} must be base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidSecret(
            f"a secret must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes once decoded, "
            f"got {len(key)}; make one with: python -c 'import base64, secrets; "
            'print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\''
        )
    return key


def signature(keys: tuple[bytes, ...], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC-SHA256>` under each key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )


def signature_headers(
    keys: tuple[bytes, ...], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers that sign `body` (none without keys)."""
    if not keys:
        return {}
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(keys, msg_id, timestamp, body),
    }
