"""signing: the steady workload run twice, with `TIMERS_SIGNING_SECRETS` unset and set to one fresh
secret in the worker's environment (its definition is in bench.workloads.catalogue)."""

from __future__ import annotations

import base64
import secrets

SIGNING_VARIABLE = "TIMERS_SIGNING_SECRETS"


def signing_secret() -> str:
    """A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
