"""The Celery settings of a checkout: the package's own (`timers.celeryconfig`), for whatever
runs from the repository root with `config_from_object("celeryconfig")` (the benchmark's plain
Celery app). The timers workers read `timers.celeryconfig` directly, so an installed wheel
carries no top-level `celeryconfig` module."""

from timers.celeryconfig import *  # noqa: F403
