"""Logging setup for the entry points (library modules only get their own logger)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, `timer_id` when the record has
    one (`extra={"timer_id": …}`), and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        timer_id = getattr(record, "timer_id", None)
        if timer_id is not None:
            line["timer_id"] = str(timer_id)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def formatter(log_format: str = "text") -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    logging.basicConfig(level=level, format=TEXT_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(log_format))
    # Alembic announces each of its plugins at INFO; keep its migration lines only.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # The embedded PostgreSQL's wrapper narrates every command it runs.
    logging.getLogger("pgserver").setLevel(logging.WARNING)


def use_format(logger: logging.Logger, log_format: str) -> None:
    """Give every handler of `logger` the format (for loggers others set up, e.g. Celery's)."""
    if log_format == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())
