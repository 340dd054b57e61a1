"""Notify listeners of timers that became pending, changed while pending, or were canceled.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

The payload is `<id> <execute_at as Unix seconds>`, so a scheduler can ignore timers far outside its
window without a query. Claims (pending → executing) do not notify: the claimant drops them itself
and any other scheduler's claim of them fails safely.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION timers_notify_change() RETURNS trigger AS $$
        BEGIN
            IF NEW.status = 'pending'
               OR (TG_OP = 'UPDATE' AND OLD.status = 'pending' AND NEW.status = 'canceled') THEN
                PERFORM pg_notify(
                    'timers_changed',
                    NEW.id::text || ' ' || extract(epoch FROM NEW.execute_at)::text
                );
            END IF;
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER timers_notify_change AFTER INSERT OR UPDATE ON timers "
        "FOR EACH ROW EXECUTE FUNCTION timers_notify_change()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS timers_notify_change ON timers")
    op.execute("DROP FUNCTION IF EXISTS timers_notify_change()")
