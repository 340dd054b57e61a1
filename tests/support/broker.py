"""Reading the callback messages that wait in a Redis broker."""

from __future__ import annotations

import base64
import json

import redis

QUEUE = "timers"


def queued_timer_ids(broker_url: str) -> list[str]:
    """The timer ids in the callback messages waiting in the broker (one or several per message)."""
    ids: list[str] = []
    for raw in redis.Redis.from_url(broker_url).lrange(QUEUE, 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        task = message["headers"]["task"]
        if task == "timers.execute_callbacks":
            ids.extend(claim[0] for claim in args[0])
        else:
            assert task == "timers.execute_callback", task
            ids.append(args[0])
    return ids
