"""Create the timers table, its indexes and the updated_at trigger.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "timers",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("execute_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("executed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("callback_type", sa.Text(), nullable=False),
        sa.Column("callback_config", postgresql.JSONB(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("metadata", postgresql.JSONB(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'executing', 'completed', 'failed', 'canceled')",
            name="ck_timers_status",
        ),
    )
    op.create_index(
        "ix_timers_pending_execute_at",
        "timers",
        ["execute_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_timers_status_created_at", "timers", ["status", "created_at"])
    # updated_at is kept right by the database on every UPDATE, whoever issues it.
    op.execute(
        """
        CREATE FUNCTION timers_touch_updated_at() RETURNS trigger AS $$
        BEGIN
            NEW.updated_at := now();
            RETURN NEW;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER timers_touch_updated_at BEFORE UPDATE ON timers "
        "FOR EACH ROW EXECUTE FUNCTION timers_touch_updated_at()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS timers_touch_updated_at ON timers")
    op.execute("DROP FUNCTION IF EXISTS timers_touch_updated_at()")
    op.drop_index("ix_timers_status_created_at", table_name="timers")
    op.drop_index("ix_timers_pending_execute_at", table_name="timers")
    op.drop_table("timers")
