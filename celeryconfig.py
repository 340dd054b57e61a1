"""Celery settings for the `timers` workers. The broker URL comes from the environment
(`CELERY_BROKER_URL`, else `REDIS_URL`) through `timers.config`; everything else is here."""

import os

# Acknowledge a message only after its callback was delivered and recorded, and give it back to
# the broker if the worker process dies mid-delivery: a callback is delivered at least once.
task_acks_late = True
task_reject_on_worker_lost = True
# A task only starts its deliveries and hands them to its process's delivery engine (see
# timers.engine), so a pool slot is busy for milliseconds whatever the receivers do. Take one
# message at a time per process; one pool process per CPU (Celery's default) spreads the HTTP work
# over the cores. CELERY_WORKER_CONCURRENCY (or --concurrency) overrides it.
worker_prefetch_multiplier = 1
worker_concurrency = int(os.environ.get("CELERY_WORKER_CONCURRENCY") or os.cpu_count() or 1)

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
