"""Recurring schedules.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

A schedule (`schedules`) generates one timer per slot, an occurrence: `timers.schedule_id` and
`timers.scheduled_for` (the slot before jitter), unique together, so any number of processes may
make the same occurrence and only one row results. `materialized_until` is the latest slot made
into a timer; the index on it finds the schedules that need their next slots made. An occurrence
carries what its claim decides alone, without reading its schedule: `late_limit` (seconds: later
than this, it is skipped, not fired) and `skip_if_running` (overlap `skip`).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("owner", sa.Text, nullable=False, server_default=sa.text("'default'")),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("cron", sa.Text, nullable=True),
        sa.Column("every", sa.Float(precision=53), nullable=True),
        sa.Column("timezone", sa.Text, nullable=False, server_default=sa.text("'UTC'")),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("jitter", sa.Float(precision=53), nullable=False, server_default=sa.text("0")),
        sa.Column("catchup", sa.Text, nullable=False, server_default=sa.text("'skip'")),
        sa.Column("catchup_window", sa.Float(precision=53), nullable=True),
        sa.Column("overlap", sa.Text, nullable=False, server_default=sa.text("'allow'")),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("callback_type", sa.Text, nullable=True),
        sa.Column("callback_config", JSONB, nullable=True),
        sa.Column("retry", JSONB, nullable=True),
        sa.Column("metadata", JSONB, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("materialized_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("skipped", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint("catchup IN ('skip', 'latest', 'all')", name="ck_schedules_catchup"),
        sa.CheckConstraint("overlap IN ('allow', 'skip')", name="ck_schedules_overlap"),
    )
    op.create_index(
        "ux_schedules_owner_name",
        "schedules",
        ["owner", "name"],
        unique=True,
        postgresql_where=sa.text("name IS NOT NULL"),
    )
    op.create_index(
        "ix_schedules_materialized_until",
        "schedules",
        ["materialized_until"],
        postgresql_where=sa.text("NOT paused"),
    )
    op.add_column("timers", sa.Column("schedule_id", UUID(as_uuid=True), nullable=True))
    op.add_column("timers", sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True))
    op.add_column("timers", sa.Column("late_limit", sa.Float(precision=53), nullable=True))
    op.add_column(
        "timers",
        sa.Column("skip_if_running", sa.Boolean, nullable=False, server_default=sa.text("false")),
    )
    op.create_index(
        "ux_timers_schedule_slot",
        "timers",
        ["schedule_id", "scheduled_for"],
        unique=True,
        postgresql_where=sa.text("schedule_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ux_timers_schedule_slot", table_name="timers")
    for name in ("skip_if_running", "late_limit", "scheduled_for", "schedule_id"):
        op.drop_column("timers", name)
    op.drop_table("schedules")
