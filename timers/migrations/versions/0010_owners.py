"""Owners: each timer belongs to the principal whose API key made it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

`owner` is the principal's name (`API_KEYS` entries `name:key`; unnamed keys are `default`). Every
timer made before this revision belongs to `default`: adding a column with a constant default
rewrites nothing, so this is instant on a table of any size. A principal reads and changes only its
own timers; the quota of pending timers per principal counts them on a partial index of pending
timers by owner (building it reads the pending timers once).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "timers",
        sa.Column("owner", sa.Text, nullable=False, server_default=sa.text("'default'")),
    )
    op.create_index(
        "ix_timers_pending_owner",
        "timers",
        ["owner"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_timers_pending_owner", table_name="timers")
    op.drop_column("timers", "owner")
