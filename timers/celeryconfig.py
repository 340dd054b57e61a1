"""Celery settings for the `timers` workers, carried by the package so that an installed wheel
needs no top-level `celeryconfig` module (the default name of every Celery app's own config).
What the environment decides (the broker URL, the pool's size, Redis's visibility timeout) comes
from `timers.config` and is set by `timers.celery_app`; everything else is here."""

# Acknowledge a message only after its callback was delivered and recorded, and give it back to
# the broker if the worker process dies mid-delivery: a callback is delivered at least once.
task_acks_late = True
task_reject_on_worker_lost = True
# A task only starts its deliveries and hands them to its process's delivery engine (see
# timers.worker.engine), so a pool slot is busy for milliseconds whatever the receivers do. Take one
# message at a time per process; the prefork pool with one process per CPU (Celery's default,
# or CELERY_WORKER_CONCURRENCY, see timers.config) spreads the HTTP work over the cores.
worker_pool = "prefork"
worker_prefetch_multiplier = 1

# Our own queue, so the workers never pick up another application's tasks on a shared broker.
task_default_queue = "timers"
task_serializer = "json"
accept_content = ["json"]
task_ignore_result = True

# Task events cost three broker messages per task: off by default. Flower switches them on in the
# workers it watches (its --enable_events, on by default), so its task views still fill in.
worker_send_task_events = False
task_send_sent_event = False

# Fail fast at start when the broker is unreachable; keep retrying if it goes away later.
broker_connection_retry_on_startup = False
broker_connection_retry = True
broker_connection_max_retries = None
# Redis's visibility timeout comes from TIMERS_REDELIVERY_TIMEOUT (see timers.celery_app).

worker_hijack_root_logger = True
