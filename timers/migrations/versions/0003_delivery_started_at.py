"""Record when a worker starts delivering a timer's callback.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Recovery uses it to tell a claim whose message was lost (never started) from a delivery that is
running (started recently) or whose worker died (started long ago).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("timers", sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_timers_executing_claimed_at",
        "timers",
        ["claimed_at"],
        postgresql_where=sa.text("status = 'executing'"),
    )


def downgrade() -> None:
    op.drop_index("ix_timers_executing_claimed_at", table_name="timers")
    op.drop_column("timers", "started_at")
