"""Delivery leases that running deliveries renew.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

A worker that starts a delivery holds it until `leased_until` and renews that while the delivery
runs; recovery takes over a started delivery only once its lease has run out (its worker is gone),
instead of waiting for the broker to redeliver an unacknowledged message.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("timers", sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("timers", "leased_until")
