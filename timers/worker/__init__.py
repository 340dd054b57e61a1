"""What the Celery worker runs: the callback tasks (`tasks`), each process's delivery engine
(`engine`, with its per-destination slots in `destinations`) and outcome recorder (`recorder`),
the Celery app (`app`), and the messages the scheduler sends them (`enqueuer`).

Nothing is imported here, so the scheduler can import `timers.worker.enqueuer` without the rest.
"""
