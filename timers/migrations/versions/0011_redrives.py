"""Redrives counted.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

`redrives` counts how many times a failed timer was redriven (`POST /timers/{id}/retry`, each a
fresh attempt budget), so that the store can refuse more than `timers.retries.MAX_REDRIVES`.
Existing timers start at 0. A column with a constant default is added without rewriting the
table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "timers",
        sa.Column("redrives", sa.Integer, nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    op.drop_column("timers", "redrives")
