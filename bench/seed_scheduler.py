"""The scheduler as the seed designed it, for comparison: our scheduler (timers.scheduler) polling
(30 s loads, 1 s ticks, no LISTEN/NOTIFY and no wake-ups), one UPDATE and one Celery task per
timer. Configured by the environment like the shipped one.

    python -m bench.seed_scheduler
"""

from __future__ import annotations

import sys
from typing import Any

from timers.scheduler.__main__ import main

# What the seed changes: no notifications or wake-ups, claims of one timer, one timer a task.
SEED: dict[str, Any] = {"listen": False, "claim_batch_size": 1, "callbacks_per_task": 1}


def run(argv: list[str] | None = None) -> int:
    return main(
        argv,
        prog="python -m bench.seed_scheduler",
        description="Run the timers scheduler as the seed designed it: polling, one UPDATE and "
        "one Celery task per timer. Configured by the environment.",
        **SEED,
    )


if __name__ == "__main__":
    sys.exit(run())
