"""Durable one-shot timers: at a given instant, POST this JSON to this URL, or run this Celery task,
once.

    from timers import Timers        # the Python API (see timers.library)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `import timers.x` stays light.
    if name == "Timers":
        from timers.library import Timers

        return Timers
    raise AttributeError(name)
