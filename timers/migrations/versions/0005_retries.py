"""Retry policies and the history of delivery attempts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

`retry` is a timer's own policy (NULL: the server's default), `delivery_attempts` the attempts made
under the current budget (a redrive starts a fresh one), `history` the last attempts (number,
start, duration, outcome, HTTP status, short error), bounded.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("timers", sa.Column("retry", JSONB, nullable=True))
    op.add_column(
        "timers",
        sa.Column("delivery_attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "timers",
        sa.Column("history", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    )


def downgrade() -> None:
    op.drop_column("timers", "history")
    op.drop_column("timers", "delivery_attempts")
    op.drop_column("timers", "retry")
