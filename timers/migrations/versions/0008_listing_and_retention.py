"""Indexes for listing at scale and for retention.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28

- `(created_at, id)`, `(status, created_at, id)` (replacing `(status, created_at)`) and
  `(execute_at, id)`: keyset pages in either sort order, with or without a status, read only the
  rows they return, at any depth.
- A GIN index on `metadata` (jsonb_path_ops, only rows that have metadata): `metadata @> {...}`.
- `(status, updated_at, id)` over finished timers only: retention finds the oldest finished rows,
  and the recent failures list reads the newest, without touching pending or executing ones.

The callback kind is a filter on these scans (there are three kinds). Building the indexes holds a
write lock on the table for as long as they take (seconds per million rows): run it when writes
can pause.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FINISHED = "status IN ('completed', 'failed', 'canceled')"


def upgrade() -> None:
    op.drop_index("ix_timers_status_created_at", table_name="timers")
    op.create_index("ix_timers_status_created_at_id", "timers", ["status", "created_at", "id"])
    op.create_index("ix_timers_created_at_id", "timers", ["created_at", "id"])
    op.create_index("ix_timers_execute_at_id", "timers", ["execute_at", "id"])
    op.create_index(
        "ix_timers_metadata",
        "timers",
        ["metadata"],
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
        postgresql_where=sa.text("metadata IS NOT NULL"),
    )
    op.create_index(
        "ix_timers_finished_updated_at",
        "timers",
        ["status", "updated_at", "id"],
        postgresql_where=sa.text(FINISHED),
    )


def downgrade() -> None:
    op.drop_index("ix_timers_finished_updated_at", table_name="timers")
    op.drop_index("ix_timers_metadata", table_name="timers")
    op.drop_index("ix_timers_execute_at_id", table_name="timers")
    op.drop_index("ix_timers_created_at_id", table_name="timers")
    op.drop_index("ix_timers_status_created_at_id", table_name="timers")
    op.create_index("ix_timers_status_created_at", "timers", ["status", "created_at"])
