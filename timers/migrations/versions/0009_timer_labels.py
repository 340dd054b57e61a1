"""Labels: the metadata filter in creation order, read from an index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28

`metadata @> {...}` through the GIN index of 0008 finds a tenant's rows but not in their order, so
every page of `GET /timers?metadata=...` read and sorted all of that tenant's rows (12 ms at
10,000 of them). `timer_labels` holds one row per top-level metadata pair whose value is a short
string (at most 200 characters), a boolean or an integer below 10^15 in size, under a key of at
most 200 characters, indexed as (key, value, created_at, timer_id). A page filtered by such a pair
alone walks that index from where the last page ended and fetches its timers by id. Triggers keep
the labels: after an insert and after a change of metadata (each row that has metadata), after a
delete (once per statement, for all the rows it deleted) and after a TRUNCATE. A change and a
delete find a timer's labels by the primary key (timer_id, key): a tenth of the time of probing
the listing index for each. `timers_labels_of` is the one definition of which pairs are labels
(`timers.store.listing.label_of` mirrors it for a filter, counting lengths in UTF-8 bytes).

Filling the labels of the timers already there takes a while on a large table (see the README's
page benchmark for 10,000,000); reads go on meanwhile, writes to `timers` wait until it is done.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_LABELS_OF = """
CREATE FUNCTION timers_labels_of(metadata jsonb) RETURNS TABLE (key text, value jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT e.key, e.value
    FROM jsonb_each(CASE WHEN jsonb_typeof(metadata) = 'object' THEN metadata END) AS e
    WHERE length(e.key) <= 200
      AND CASE jsonb_typeof(e.value)
              WHEN 'string' THEN length(e.value #>> '{}') <= 200
              WHEN 'boolean' THEN true
              WHEN 'number' THEN abs((e.value #>> '{}')::numeric) < 1e15
                                 AND (e.value #>> '{}')::numeric
                                     = trunc((e.value #>> '{}')::numeric)
              ELSE false
          END
$$
"""

_LABEL = """
CREATE FUNCTION timers_label() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM timer_labels WHERE timer_id = OLD.id;
    END IF;
    INSERT INTO timer_labels (key, value, created_at, timer_id)
    SELECT n.key, n.value, NEW.created_at, NEW.id FROM timers_labels_of(NEW.metadata) n;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""

_UNLABEL = """
CREATE FUNCTION timers_unlabel() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE timer_labels;
    ELSE
        DELETE FROM timer_labels
        WHERE timer_id = ANY (ARRAY(SELECT id FROM gone WHERE metadata IS NOT NULL));
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "timer_labels",
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("value", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timer_id", UUID(as_uuid=True), nullable=False),
        sa.PrimaryKeyConstraint("timer_id", "key", name="pk_timer_labels"),
    )
    op.execute(_LABELS_OF)
    op.execute(_LABEL)
    op.execute(_UNLABEL)
    op.execute(
        "CREATE TRIGGER timers_label_insert AFTER INSERT ON timers FOR EACH ROW "
        "WHEN (NEW.metadata IS NOT NULL) EXECUTE FUNCTION timers_label()"
    )
    op.execute(
        "CREATE TRIGGER timers_label_update AFTER UPDATE OF metadata ON timers FOR EACH ROW "
        "WHEN (OLD.metadata IS DISTINCT FROM NEW.metadata) EXECUTE FUNCTION timers_label()"
    )
    op.execute(
        "CREATE TRIGGER timers_unlabel AFTER DELETE ON timers REFERENCING OLD TABLE AS gone "
        "FOR EACH STATEMENT EXECUTE FUNCTION timers_unlabel()"
    )
    op.execute(
        "CREATE TRIGGER timers_unlabel_all AFTER TRUNCATE ON timers "
        "FOR EACH STATEMENT EXECUTE FUNCTION timers_unlabel()"
    )
    # After the triggers: creating them locks out writes until this migration commits, so the
    # timers read here are all there are, and none gets its labels twice.
    op.execute(
        "INSERT INTO timer_labels (key, value, created_at, timer_id) "
        "SELECT l.key, l.value, t.created_at, t.id "
        "FROM timers t CROSS JOIN LATERAL timers_labels_of(t.metadata) l "
        "WHERE t.metadata IS NOT NULL"
    )
    # Built after the rows are in: faster than growing it one row at a time.
    op.create_index(
        "ix_timer_labels_key_value_created_at",
        "timer_labels",
        ["key", "value", "created_at", "timer_id"],
    )
    op.execute("ANALYZE timer_labels")


def downgrade() -> None:
    op.execute("DROP TRIGGER timers_unlabel_all ON timers")
    op.execute("DROP TRIGGER timers_unlabel ON timers")
    op.execute("DROP TRIGGER timers_label_update ON timers")
    op.execute("DROP TRIGGER timers_label_insert ON timers")
    op.execute("DROP FUNCTION timers_unlabel()")
    op.execute("DROP FUNCTION timers_label()")
    op.execute("DROP FUNCTION timers_labels_of(jsonb)")
    op.drop_table("timer_labels")
