-- The PostgreSQL store's SQL text, each query under a `-- name --` header, loaded by name
-- (`timers.store.sql.queries`). Parameters are named (`:name`), as SQLAlchemy's `text()` binds them.

-- begin --
-- Opens a transaction of several statements (the engine's connections are in autocommit).
BEGIN

-- commit --
COMMIT

-- rollback --
ROLLBACK

-- ping --
-- Whether the database answers.
SELECT 1

-- snapshot --
-- A page and its total read from one snapshot.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY

-- listen --
-- The change feed's channel, filled by the migrations' trigger.
LISTEN timers_changed

-- insert_timer --
-- One `pending` timer, inserted by `create_in` on a caller's connection (its JSON given as text).
INSERT INTO timers (id, execute_at, callback_type, callback_config, metadata, retry, owner, status)
VALUES (CAST(:id AS uuid), :execute_at, :callback_type, CAST(:callback_config AS jsonb),
        CAST(:metadata AS jsonb), CAST(:retry AS jsonb), :owner, 'pending')
RETURNING *

-- insert_timers --
-- `pending` timers from parallel arrays, one per index (`create_many`), their JSON given as text:
-- one statement whose text is the same for any number of rows. It returns what the database chose
-- (the times and the status), not the JSON it was given: reading that back cost more than writing.
INSERT INTO timers (id, execute_at, callback_type, callback_config, metadata, retry, owner, status)
SELECT t.id, t.execute_at, t.callback_type, CAST(t.callback_config AS jsonb),
       CAST(t.metadata AS jsonb), CAST(t.retry AS jsonb), t.owner, 'pending'
FROM unnest(CAST(:ids AS uuid[]), CAST(:execute_ats AS timestamptz[]),
            CAST(:callback_types AS text[]), CAST(:callback_configs AS text[]),
            CAST(:metadatas AS text[]), CAST(:retries AS text[]), CAST(:owners AS text[]))
  AS t(id, execute_at, callback_type, callback_config, metadata, retry, owner)
RETURNING id, status, created_at, updated_at

-- explain --
-- The planner's expectation for a statement (planning only), filled in with `str.format`.
EXPLAIN (FORMAT JSON) {statement}

-- estimate_counts --
-- The table's row estimate and the status column's most common values with their frequencies.
SELECT c.reltuples::bigint AS rows,
       s.most_common_vals::text::text[] AS statuses,
       s.most_common_freqs AS frequencies
FROM pg_class c
LEFT JOIN pg_stats s
  ON s.schemaname = current_schema() AND s.tablename = 'timers' AND s.attname = 'status'
WHERE c.oid = 'timers'::regclass

-- lateness --
-- Per minute of the last `minutes`, the lateness of the newest `sample` completed and failed timers.
WITH recent AS (
    (SELECT updated_at, started_at - execute_at AS late FROM timers
     WHERE status = 'completed' AND updated_at > now() - make_interval(mins => :minutes)
     ORDER BY status, updated_at DESC LIMIT :sample)
    UNION ALL
    (SELECT updated_at, started_at - execute_at AS late FROM timers
     WHERE status = 'failed' AND updated_at > now() - make_interval(mins => :minutes)
     ORDER BY status, updated_at DESC LIMIT :sample)
)
SELECT date_trunc('minute', updated_at) AS minute, count(*) AS count,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM late)) * 1000 AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM late)) * 1000 AS p99,
       max(extract(epoch FROM late)) * 1000 AS max
FROM recent WHERE late IS NOT NULL
GROUP BY 1 ORDER BY 1

-- purge_finished --
-- One purge batch under the advisory lock `lock`: the next `limit` finished timers after
-- (`after_at`, `after_id`) in the first of `statuses`, then the others, deleted if still old.
WITH lock AS (
    SELECT pg_try_advisory_xact_lock(:lock) AS held,
           set_config('lock_timeout', :lock_timeout, true)
),
doomed AS MATERIALIZED (
    SELECT s.n, t.status, t.updated_at, t.id
    FROM unnest(CAST(:statuses AS text[])) WITH ORDINALITY AS s(status, n)
    CROSS JOIN LATERAL (
        SELECT t.status, t.updated_at, t.id FROM timers t
        WHERE (SELECT held FROM lock)
          AND t.status IN ('completed', 'failed', 'canceled')
          AND t.status = s.status
          AND (t.updated_at, t.id) > (
              CASE WHEN s.n = 1 THEN CAST(:after_at AS timestamptz) ELSE '-infinity' END,
              CASE WHEN s.n = 1 THEN CAST(:after_id AS uuid) ELSE :nil END
          )
          AND t.updated_at < now() - make_interval(secs => :age)
        ORDER BY t.updated_at, t.id
        LIMIT :limit
    ) t
    ORDER BY s.n, t.updated_at, t.id
    LIMIT :limit
),
gone AS (
    DELETE FROM timers d
    WHERE d.id = ANY (ARRAY(SELECT id FROM doomed))
      -- re-checked on a row changed meanwhile; IS TRUE keeps it out of the index choice,
      -- so the rows are found by id
      AND (d.status IN ('completed', 'failed', 'canceled')
           AND d.updated_at < now() - make_interval(secs => :age)) IS TRUE
    RETURNING 1
),
last AS (SELECT * FROM doomed ORDER BY n DESC, updated_at DESC, id DESC LIMIT 1)
SELECT (SELECT held FROM lock) AS held,
       (SELECT count(*) FROM doomed) AS seen,
       (SELECT count(*) FROM gone) AS deleted,
       (SELECT status FROM last) AS last_status,
       (SELECT updated_at FROM last) AS last_at,
       (SELECT id FROM last) AS last_id

-- claim_due --
-- Flips to `executing` those of `ids` still `pending` and due by the database's clock, skipping
-- (never waiting on) rows another transaction holds; returns each row it flipped with its new
-- claim number (`claimed` true). An occurrence of a schedule (0012) is skipped instead
-- (`canceled`, `skipped: …`, counted on its schedule) when, never claimed before, it is later than
-- its `late_limit` (unless its schedule's catch-up is `latest` and no later occurrence of it is
-- due: the latest fires however late) and, under `latest`, when a later occurrence of a `latest` schedule is due, or with
-- `skip_if_running` while another of its schedule is executing or waiting to retry; each row it
-- skipped is returned too (`claimed` false), so its schedule's next slots can follow at once. A
-- timer of no schedule pays only the `schedule_id IS NOT NULL` check.
WITH due AS (
    SELECT id, schedule_id, scheduled_for, late_limit, skip_if_running,
        -- later than its limit; never one claimed before (a lost claim recovered, a released
        -- one): it was taken on time
        attempts = 0 AND late_limit IS NOT NULL
            AND now() - execute_at > make_interval(secs => late_limit) AS late
    FROM timers
    -- IS TRUE keeps the status and the time out of the index choice: the ids are looked up by
    -- key. Statistics from a table of timers due days ahead make `execute_at <= now()` look
    -- empty, and an index on it would be walked through every timer due before.
    WHERE id = ANY(:ids) AND (status = 'pending' AND execute_at <= now()) IS TRUE
    FOR UPDATE SKIP LOCKED
), verdict AS (
    SELECT d.id, d.schedule_id, CASE
        WHEN d.late AND NOT EXISTS (
                SELECT 1 FROM schedules s WHERE s.id = d.schedule_id AND s.catchup = 'latest')
        THEN 'skipped: later than its catch-up limit of ' || d.late_limit || ' s'
        WHEN d.late AND EXISTS (
                SELECT 1 FROM timers o
                WHERE o.schedule_id = d.schedule_id AND o.scheduled_for > d.scheduled_for
                  AND o.execute_at <= now() AND o.status <> 'canceled')
        THEN 'skipped: a later occurrence is due (catch-up latest)'
        WHEN d.skip_if_running AND EXISTS (
            SELECT 1 FROM timers o
            WHERE o.schedule_id = d.schedule_id AND o.id <> d.id
              AND (o.status = 'executing' OR (o.status = 'pending' AND o.delivery_attempts > 0))
        )
        THEN 'skipped: the previous occurrence is still running' END AS reason
    FROM due d
    WHERE d.schedule_id IS NOT NULL
), skipped AS (
    UPDATE timers t SET status = 'canceled', updated_at = now(), last_error = v.reason
    FROM verdict v
    WHERE t.id = v.id AND v.reason IS NOT NULL
    RETURNING t.id, t.schedule_id
), counted AS (
    UPDATE schedules s SET skipped = s.skipped + c.n
    FROM (SELECT schedule_id, count(*) AS n FROM skipped GROUP BY schedule_id) c
    WHERE s.id = c.schedule_id
), claimed AS (
    UPDATE timers SET status = 'executing', claimed_at = now(), started_at = NULL,
        leased_until = NULL, attempts = attempts + 1
    WHERE id IN (SELECT id FROM due) AND status = 'pending'
      AND id NOT IN (SELECT id FROM skipped)
    RETURNING id, attempts, execute_at, schedule_id
)
SELECT id, attempts, execute_at, schedule_id, true AS claimed FROM claimed
UNION ALL
SELECT id, 0, NULL, schedule_id, false FROM skipped

-- drop_pending_occurrences --
-- The pending occurrences of schedule `:sid`, deleted as the changes that re-make them remove them
-- (a new spec, a pause): never fired, nothing to keep, so their slots can be made again.
DELETE FROM timers WHERE schedule_id = :sid AND status = 'pending'

-- insert_occurrences --
-- The occurrences a top-up makes, of any number of schedules, from parallel arrays (their JSON
-- given as text), one statement for the whole batch; a slot another process made first is left
-- alone (unique per schedule and slot).
INSERT INTO timers (id, execute_at, callback_type, callback_config, metadata, retry, owner, status,
                    schedule_id, scheduled_for, late_limit, skip_if_running)
SELECT t.id, t.execute_at, t.callback_type, CAST(t.callback_config AS jsonb),
       CAST(t.metadata AS jsonb), CAST(t.retry AS jsonb), t.owner, 'pending',
       t.schedule_id, t.scheduled_for, t.late_limit, t.skip_if_running
FROM unnest(CAST(:ids AS uuid[]), CAST(:execute_ats AS timestamptz[]),
            CAST(:callback_types AS text[]), CAST(:callback_configs AS text[]),
            CAST(:metadatas AS text[]), CAST(:retries AS text[]), CAST(:owners AS text[]),
            CAST(:schedule_ids AS uuid[]), CAST(:scheduled_fors AS timestamptz[]),
            CAST(:late_limits AS float8[]), CAST(:skip_if_runnings AS boolean[]))
  AS t(id, execute_at, callback_type, callback_config, metadata, retry, owner,
       schedule_id, scheduled_for, late_limit, skip_if_running)
ON CONFLICT (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL DO NOTHING

-- advance_schedules --
-- After a top-up: each schedule's latest slot examined (never moved back) and its missed slots
-- counted, from parallel arrays, one statement for the whole batch.
UPDATE schedules s
SET materialized_until = GREATEST(s.materialized_until, u.until), skipped = s.skipped + u.skipped
FROM unnest(CAST(:ids AS uuid[]), CAST(:untils AS timestamptz[]), CAST(:skipped AS bigint[]))
  AS u(id, until, skipped)
WHERE s.id = u.id
