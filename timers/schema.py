"""The database schema as SQLAlchemy Core metadata; migrations must produce exactly this."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
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

STATUSES = ("pending", "executing", "completed", "failed", "canceled")

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
