"""Alembic environment: migrates the database named in the config's `sqlalchemy.url`."""

from alembic import context

from timers.schema import metadata
from timers.store import database_engine

config = context.config
# Migrations run in a transaction (PostgreSQL has transactional DDL): no autocommit here.
engine = database_engine(
    config.get_main_option("sqlalchemy.url") or "",
    pool_pre_ping=False,
    isolation_level="READ COMMITTED",
)
try:
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
