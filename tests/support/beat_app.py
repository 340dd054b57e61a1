"""A user's Celery application with a `beat_schedule` (a crontab every minute and a 2-second
interval) whose one task appends each run (task id, entry, time) to the file `BEAT_APP_RUNS`, so a
test can count the runs of every slot. Its broker is `BEAT_APP_BROKER_URL`; its queue is `beatapp`.

    celery -A tests.support.beat_app beat -S timers.celery.BeatScheduler
    celery -A tests.support.beat_app worker -Q beatapp
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.schedules import crontab

EVERY_MINUTE = "every-minute"
EVERY_2S = "every-2s"

app = Celery("beatapp", broker=os.environ.get("BEAT_APP_BROKER_URL", "redis://127.0.0.1:6379/15"))
app.conf.task_default_queue = "beatapp"
app.conf.task_serializer = "json"
app.conf.accept_content = ["json"]
app.conf.broker_connection_retry_on_startup = True
app.conf.timezone = "Europe/Paris"
app.conf.beat_schedule = {
    EVERY_MINUTE: {"task": "beatapp.record", "schedule": crontab(), "args": [EVERY_MINUTE]},
    EVERY_2S: {
        "task": "beatapp.record",
        "schedule": timedelta(seconds=2),
        "args": [EVERY_2S],
        "options": {"priority": 3},
    },
}


@app.task(name="beatapp.record", bind=True)
def record(self: Task, entry: str) -> None:
    run = {"task_id": self.request.id, "entry": entry, "at": time.time()}
    # One short line in append mode: the pool's processes never interleave their writes.
    with open(os.environ["BEAT_APP_RUNS"], "a") as out:
        out.write(json.dumps(run) + "\n")


def runs(path: Path) -> list[dict[str, Any]]:
    """Every run of the task so far, oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
