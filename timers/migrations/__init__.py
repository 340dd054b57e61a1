"""Alembic migrations, run programmatically by `timers migrate` (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from timers.migrations.adopt import Refused, adopt
from timers.store import database_errors

__all__ = ["Refused", "alembic_config", "downgrade", "upgrade"]

HERE = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # `%` would be read as interpolation by configparser.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> list[str]:
    """Migrate to `revision`, adopting a database mca-timer laid first (`timers.migrations.adopt`);
    returns what the adoption found and did (nothing for any other database). Raises Refused for a
    `timers` table neither ours nor mca-timer's, StoreUnavailable / StoreError when the database
    refuses."""
    config = alembic_config(database_url)
    adopted = adopt(database_url, ScriptDirectory.from_config(config))
    with database_errors():
        command.upgrade(config, revision)
    return adopted


def downgrade(database_url: str, revision: str) -> None:
    with database_errors():
        command.downgrade(alembic_config(database_url), revision)
