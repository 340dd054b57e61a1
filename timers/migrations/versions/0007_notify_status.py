"""Say in each change notification whether the timer is pending or was canceled.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

The payload becomes `<id> <execute_at as Unix seconds> <status>`, which is all a scheduler's cache
holds of a timer, so the change listener no longer re-reads the rows a notification names (one
query per notification batch: per create, update, cancel and retry). A listener still accepts the
two-part payload of 0002 and re-reads those rows.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION timers_notify_change() RETURNS trigger AS $$
BEGIN
    IF NEW.status = 'pending'
       OR (TG_OP = 'UPDATE' AND OLD.status = 'pending' AND NEW.status = 'canceled') THEN
        PERFORM pg_notify(
            'timers_changed',
            NEW.id::text || ' ' || extract(epoch FROM NEW.execute_at)::text%s
        );
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.execute(_FUNCTION % " || ' ' || NEW.status")


def downgrade() -> None:
    op.execute(_FUNCTION % "")
