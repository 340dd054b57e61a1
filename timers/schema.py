"""The database schema as SQLAlchemy Core metadata; migrations must produce exactly this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

timers = Table(
    "timers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("execute_at", DateTime(timezone=True), nullable=False),
    Column("executed_at", DateTime(timezone=True), nullable=True),
    Column("callback_type", Text, nullable=False),
    Column("callback_config", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("last_error", Text, nullable=True),
    Column("metadata", JSONB, nullable=True),
    # How many times the scheduler has claimed this timer, and when it last did.
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    # When a worker last started delivering the callback (recovery tells lost from running by it).
    Column("started_at", DateTime(timezone=True), nullable=True),
    # Until when the worker delivering it holds the delivery; renewed while the delivery runs.
    Column("leased_until", DateTime(timezone=True), nullable=True),
    # The timer's own retry policy (NULL: the server's default), the delivery attempts made under
    # the current budget, and the last attempts (bounded).
    Column("retry", JSONB, nullable=True),
    Column("delivery_attempts", Integer, nullable=False, server_default=text("0")),
    Column("history", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # How many times it was redriven (each a fresh budget), up to MAX_REDRIVES (0011).
    Column("redrives", Integer, nullable=False, server_default=text("0")),
    # Idempotent create: the client's key, a hash of the API key that used it (never the key
    # itself) and a hash of the canonical request it came with. Kept as long as the timer.
    Column("idempotency_key", Text, nullable=True),
    Column("api_key_hash", Text, nullable=True),
    Column("request_hash", Text, nullable=True),
    # The principal whose API key made it (0010); it alone sees and changes it, and admins.
    Column("owner", Text, nullable=False, server_default=text("'default'")),
    # An occurrence of a schedule (0012): its schedule, its slot before jitter, how late (seconds)
    # it may still fire, and whether it is skipped while another of its schedule runs.
    Column("schedule_id", UUID(as_uuid=True), nullable=True),
    Column("scheduled_for", DateTime(timezone=True), nullable=True),
    Column("late_limit", Float(precision=53), nullable=True),
    Column("skip_if_running", Boolean, nullable=False, server_default=text("false")),
    CheckConstraint(
        "status IN ('pending', 'executing', 'completed', 'failed', 'canceled')",
        name="ck_timers_status",
    ),
    Index(
        "ix_timers_pending_execute_at",
        "execute_at",
        postgresql_where=text("status = 'pending'"),
    ),
    # Keyset pages (0008): each sort order, with or without a status.
    # A principal's pending timers, for its quota (0010).
    Index("ix_timers_pending_owner", "owner", postgresql_where=text("status = 'pending'")),
    Index("ix_timers_status_created_at_id", "status", "created_at", "id"),
    Index("ix_timers_created_at_id", "created_at", "id"),
    Index("ix_timers_execute_at_id", "execute_at", "id"),
    Index(
        "ix_timers_metadata",
        "metadata",
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
        postgresql_where=text("metadata IS NOT NULL"),
    ),
    # Retention and recent failures: finished timers by when they finished.
    Index(
        "ix_timers_finished_updated_at",
        "status",
        "updated_at",
        "id",
        postgresql_where=text("status IN ('completed', 'failed', 'canceled')"),
    ),
    Index(
        "ix_timers_executing_claimed_at",
        "claimed_at",
        postgresql_where=text("status = 'executing'"),
    ),
    # A key names one timer per API key.
    Index(
        "ux_timers_idempotency_key",
        "api_key_hash",
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    # One occurrence per slot of a schedule, whoever makes it (0012).
    Index(
        "ux_timers_schedule_slot",
        "schedule_id",
        "scheduled_for",
        unique=True,
        postgresql_where=text("schedule_id IS NOT NULL"),
    ),
)

# The metadata filter in creation order (0009): one row per top-level pair that is a label (see
# the `timers_labels_of` function), kept by triggers on `timers`.
timer_labels = Table(
    "timer_labels",
    metadata,
    Column("key", Text, nullable=False),
    Column("value", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("timer_id", UUID(as_uuid=True), nullable=False),
    PrimaryKeyConstraint("timer_id", "key", name="pk_timer_labels"),
    Index("ix_timer_labels_key_value_created_at", "key", "value", "created_at", "timer_id"),
)

# Recurring schedules (0012): each slot becomes one timer in `timers`; `materialized_until` is the
# latest slot made into one.
schedules = Table(
    "schedules",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("owner", Text, nullable=False, server_default=text("'default'")),
    Column("name", Text, nullable=True),
    Column("cron", Text, nullable=True),
    Column("every", Float(precision=53), nullable=True),
    Column("timezone", Text, nullable=False, server_default=text("'UTC'")),
    Column("start_at", DateTime(timezone=True), nullable=False),
    Column("end_at", DateTime(timezone=True), nullable=True),
    Column("jitter", Float(precision=53), nullable=False, server_default=text("0")),
    Column("catchup", Text, nullable=False, server_default=text("'skip'")),
    Column("catchup_window", Float(precision=53), nullable=True),
    Column("overlap", Text, nullable=False, server_default=text("'allow'")),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("callback_type", Text, nullable=True),
    Column("callback_config", JSONB, nullable=True),
    Column("retry", JSONB, nullable=True),
    Column("metadata", JSONB, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("materialized_until", DateTime(timezone=True), nullable=False),
    Column("skipped", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("catchup IN ('skip', 'latest', 'all')", name="ck_schedules_catchup"),
    CheckConstraint("overlap IN ('allow', 'skip')", name="ck_schedules_overlap"),
    Index(
        "ux_schedules_owner_name",
        "owner",
        "name",
        unique=True,
        postgresql_where=text("name IS NOT NULL"),
    ),
    Index(
        "ix_schedules_materialized_until",
        "materialized_until",
        postgresql_where=text("NOT paused"),
    ),
)
