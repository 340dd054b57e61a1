"""Idempotent create: what an `Idempotency-Key` is, and what it is kept with.

A key is 1 to 255 visible ASCII characters, chosen by the client. It is unique per API key: it is
stored with a hash of the API key that used it (never the key itself), and with a hash of the
canonical request (the timer as it would be stored, so the order of JSON fields, an explicit
default or another spelling of the same instant make no difference) to tell a retry from a new
request that reuses the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC

from timers.storage import IdempotencyKey, NewTimer

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
KEY_PATTERN = r"^[\x21-\x7e]+$"
KEY_DESCRIPTION = (
    "1 to 255 visible ASCII characters naming this create: the same key with the same request "
    "answers 200 with the timer the first one made (no second timer), and with a different "
    "request 400. Keys are per API key and kept as long as their timer."
)


def api_key_hash(api_key: str) -> str:
    """What is stored of the API key that used an idempotency key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def request_hash(new: NewTimer) -> str:
    """A hash of the timer a request asks for, in canonical form."""
    canonical = {
        "execute_at": new.execute_at.astimezone(UTC).isoformat(),
        "callback_type": new.callback_type,
        "callback_config": new.callback_config,
        "metadata": new.metadata,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def with_key(new: NewTimer, key: str | None, api_key: str) -> NewTimer:
    """`new` carrying its idempotency key, if one was given."""
    if key is None:
        return new
    return replace(new, idempotency=IdempotencyKey(key, api_key_hash(api_key), request_hash(new)))
