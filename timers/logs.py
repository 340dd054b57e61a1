"""Logging setup for the entry points (library modules only get their own logger)."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic announces each of its plugins at INFO; keep its migration lines only.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # The embedded PostgreSQL's wrapper narrates every command it runs.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
