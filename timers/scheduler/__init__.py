"""The scheduler process: a memory loader and an execution loop sharing one in-memory cache.

    python -m timers.scheduler

Two threads, not asyncio: the work is blocking database and broker I/O through libraries that are
synchronous (psycopg2, kombu), each loop does one thing at a time, and a thread per loop keeps them
independent (a slow load never delays a tick) with nothing to bridge. The cache's lock is held only
to copy or swap a dict, never across I/O.

- MemoryLoader, every `load_interval`: the pending timers due in
  [now - recovery_window, now + lookahead] replace the whole cache.
- ExecutionLoop, every `execute_interval` at a fixed rate: the cached timers that are due are claimed
  in PostgreSQL with one conditional statement, removed from the cache, and only the claimed ones are
  enqueued as Celery tasks. A timer that could not be enqueued is released back to `pending`.
"""

from timers.scheduler.cache import TimerCache
from timers.scheduler.execution import Enqueuer, ExecutionLoop
from timers.scheduler.listener import ChangeListener
from timers.scheduler.loader import MemoryLoader
from timers.scheduler.recovery import Recovery
from timers.scheduler.retention import Retention
from timers.scheduler.runner import Scheduler
from timers.scheduler.timing import near_term_window, next_deadline, next_wake, run_every

__all__ = [
    "ChangeListener",
    "Enqueuer",
    "ExecutionLoop",
    "MemoryLoader",
    "Recovery",
    "Retention",
    "Scheduler",
    "TimerCache",
    "near_term_window",
    "next_deadline",
    "next_wake",
    "run_every",
]
