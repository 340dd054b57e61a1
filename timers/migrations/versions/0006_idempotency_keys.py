"""Idempotency keys on timers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

`POST /timers` with an `Idempotency-Key` makes one timer per key and API key: the key, a hash of
the API key that used it and a hash of the request are kept on the timer's row, and a unique index
on (API key hash, key) lets concurrent duplicates insert only once. Adding nullable columns and
building the index on existing rows (all without a key) is quick.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("timers", sa.Column("idempotency_key", sa.Text(), nullable=True))
    op.add_column("timers", sa.Column("api_key_hash", sa.Text(), nullable=True))
    op.add_column("timers", sa.Column("request_hash", sa.Text(), nullable=True))
    op.create_index(
        "ux_timers_idempotency_key",
        "timers",
        ["api_key_hash", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ux_timers_idempotency_key", table_name="timers")
    op.drop_column("timers", "request_hash")
    op.drop_column("timers", "api_key_hash")
    op.drop_column("timers", "idempotency_key")
