-- workerpool schema, version 1.
-- The names algolia_sync_queue, algolia_sync_log, algolia_index_config, algolia_sync_stats,
-- get_pending_algolia_syncs and cleanup_old_sync_records are the seed-compatible surface (DESIGN.md).

-- Which tables feed which index. table_name is the table's regclass text as written by `watch`.
CREATE TABLE algolia_index_config (
    table_name   text PRIMARY KEY,
    index_name   text NOT NULL,
    key_column   text NOT NULL,
    key_type     text NOT NULL,
    source_view  text,
    attributes   text[],   -- columns that make up the record (NULL: all of them)
    transform    text,     -- 'module:function' applied to each record, or NULL
    settings     jsonb,    -- Algolia index settings kept as code (`workerpool settings push`)
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The hot queue: one row per pending key, plus rows being processed and rows that failed.
-- Acknowledged rows are deleted (they live on in algolia_sync_log), so the table stays small and
-- HOT updates (fillfactor) keep claim/release cheap.
CREATE TABLE algolia_sync_queue (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name      text NOT NULL,
    record_id       text NOT NULL,
    operation       text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE', 'REINDEX')),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    claim_token     uuid,
    claimed_at      timestamptz,
    claimed_by      text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70,
        autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_cost_delay = 0,
        autovacuum_analyze_scale_factor = 0.02);

-- Coalescing: at most one pending row per key; further changes merge into it.
CREATE UNIQUE INDEX algolia_sync_queue_pending_key
    ON algolia_sync_queue (table_name, record_id) WHERE status = 'pending';
-- The claim scans due pending rows in order.
CREATE INDEX algolia_sync_queue_due
    ON algolia_sync_queue (next_attempt_at, id) WHERE status = 'pending';
-- Per-key serialization and lease recovery look at rows being processed.
CREATE INDEX algolia_sync_queue_processing
    ON algolia_sync_queue (table_name, record_id, locked_until) WHERE status = 'processing';
CREATE INDEX algolia_sync_queue_failed
    ON algolia_sync_queue (table_name, created_at) WHERE status = 'failed';

-- Append-only history of every outcome (the seed's monitoring query reads it by synced_at).
CREATE TABLE algolia_sync_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_id     bigint,
    table_name   text NOT NULL,
    record_id    text NOT NULL,
    index_name   text,
    operation    text NOT NULL,
    action       text,
    status       text NOT NULL CHECK (status IN ('success', 'failed', 'retry', 'skipped')),
    attempts     integer NOT NULL DEFAULT 0,
    error        text,
    claim_token  uuid,
    claimed_by   text,
    enqueued_at  timestamptz,
    claimed_at   timestamptz,
    synced_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX algolia_sync_log_synced_at ON algolia_sync_log (synced_at);

-- Live workers, by heartbeat (stats, health, and the operator's "who is running").
CREATE TABLE algolia_sync_workers (
    worker_id      text PRIMARY KEY,
    host           text NOT NULL,
    pid            integer NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    heartbeat_at   timestamptz NOT NULL DEFAULT now(),
    batches        bigint NOT NULL DEFAULT 0,
    records        bigint NOT NULL DEFAULT 0
);

-- A change to related_table re-enqueues the rows of table_name whose fk_column points at it.
CREATE TABLE algolia_index_related (
    table_name    text NOT NULL REFERENCES algolia_index_config (table_name) ON DELETE CASCADE,
    related_table text NOT NULL,
    fk_column     text NOT NULL,
    ref_column    text NOT NULL,
    PRIMARY KEY (table_name, related_table, fk_column)
);

-- Record versions: taken when a worker reads the current state, so a later read is always newer.
CREATE SEQUENCE algolia_sync_version_seq;

-- What was last sent for each record: a content hash (to skip unchanged records) and a hash of its
-- attribute names (a record whose attribute set changed is replaced whole, so that attributes that
-- disappear from it disappear from the index too).
CREATE TABLE algolia_sync_hashes (
    index_name text NOT NULL,
    object_id  text NOT NULL,
    hash       bytea NOT NULL,
    shape      bytea NOT NULL,
    PRIMARY KEY (index_name, object_id)
) WITH (fillfactor = 80);

-- Capture: `watch` generates one statement-level trigger function per watched table, with the key
-- column and the compared columns baked into static SQL. plpgsql caches the plans of static
-- statements where EXECUTE re-plans every time: measured here, ~210 us -> ~63 us of trigger time per
-- single-row INSERT. Transition tables make a bulk statement enqueue set-wise; ON CONFLICT coalesces
-- into the pending row of a key (`watch` insists on a unique key, so no statement carries a key twice
-- and no DISTINCT sort is needed); an UPDATE that changes none of the compared columns (`cols`;
-- empty: the whole row) enqueues nothing; a TRUNCATE (BEFORE, while the rows are still there) turns
-- every key into a delete. Returns the function's qualified name for the triggers to call.
CREATE FUNCTION algolia_sync_create_capture(fn_name text, tbl text, key_col text, cols text[])
RETURNS text
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $create$
DECLARE
    qualified text := format('%I.%I', current_schema(), fn_name);
    new_cmp   text := 'n::text';
    old_cmp   text := 'o::text';
BEGIN
    IF cols IS NOT NULL AND cardinality(cols) > 0 THEN
        SELECT 'ROW(' || string_agg(format('n.%I', c), ', ') || ')::text',
               'ROW(' || string_agg(format('o.%I', c), ', ') || ')::text'
          INTO new_cmp, old_cmp
          FROM unnest(cols) AS c;
    END IF;
    EXECUTE format($fn$
CREATE OR REPLACE FUNCTION %1$s() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $body$
DECLARE
    enqueued bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO algolia_sync_queue (table_name, record_id, operation)
        SELECT %2$L, (r.%3$I)::text, 'INSERT' FROM new_rows r
        ON CONFLICT (table_name, record_id) WHERE status = 'pending'
        DO UPDATE SET operation = EXCLUDED.operation, updated_at = now();
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO algolia_sync_queue (table_name, record_id, operation)
        SELECT %2$L, coalesce(n.%3$I, o.%3$I)::text, CASE WHEN n.%3$I IS NULL THEN 'DELETE' ELSE 'UPDATE' END
          FROM new_rows n FULL JOIN old_rows o ON o.%3$I = n.%3$I
         WHERE n.%3$I IS NULL OR o.%3$I IS NULL OR %4$s IS DISTINCT FROM %5$s
        ON CONFLICT (table_name, record_id) WHERE status = 'pending'
        DO UPDATE SET operation = EXCLUDED.operation, updated_at = now();
    ELSIF TG_OP = 'TRUNCATE' THEN
        INSERT INTO algolia_sync_queue (table_name, record_id, operation)
        SELECT %2$L, (r.%3$I)::text, 'DELETE' FROM %6$s r
        ON CONFLICT (table_name, record_id) WHERE status = 'pending'
        DO UPDATE SET operation = EXCLUDED.operation, updated_at = now();
    ELSE
        INSERT INTO algolia_sync_queue (table_name, record_id, operation)
        SELECT %2$L, (r.%3$I)::text, 'DELETE' FROM old_rows r
        ON CONFLICT (table_name, record_id) WHERE status = 'pending'
        DO UPDATE SET operation = EXCLUDED.operation, updated_at = now();
    END IF;
    GET DIAGNOSTICS enqueued = ROW_COUNT;
    IF enqueued > 0 THEN
        PERFORM pg_notify('algolia_sync', %2$L);
    END IF;
    RETURN NULL;
END;
$body$
$fn$, qualified, tbl, key_col, new_cmp, old_cmp, tbl::regclass);
    RETURN qualified;
END;
$create$;

-- Propagation from a related table, set-wise: renaming one brand enqueues all of its products in
-- one statement, coalescing with what is already pending.
-- TG_ARGV: [0] watched table, [1] its key column, [2] its foreign-key column, [3] the related
-- table's referenced column.
CREATE FUNCTION algolia_sync_enqueue_related() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    tbl     text := TG_ARGV[0];
    key_col text := TG_ARGV[1];
    fk_col  text := TG_ARGV[2];
    ref_col text := TG_ARGV[3];
    refs    text;
    n       bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        refs := format('SELECT r.%I FROM new_rows r', ref_col);
    ELSIF TG_OP = 'DELETE' THEN
        refs := format('SELECT r.%I FROM old_rows r', ref_col);
    ELSE
        refs := format(
            'SELECT coalesce(n.%1$I, o.%1$I) FROM new_rows n FULL JOIN old_rows o ON o.%1$I = n.%1$I
              WHERE n.%1$I IS NULL OR o.%1$I IS NULL OR n::text IS DISTINCT FROM o::text', ref_col);
    END IF;
    EXECUTE format(
        'INSERT INTO algolia_sync_queue (table_name, record_id, operation)
         SELECT $1, (t.%1$I)::text, ''UPDATE'' FROM %2$s t WHERE t.%3$I IN (%4$s)
         ON CONFLICT (table_name, record_id) WHERE status = ''pending''
         DO UPDATE SET updated_at = now()', key_col, tbl, fk_col, refs)
    USING tbl;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('algolia_sync', tbl);
    END IF;
    RETURN NULL;
END;
$$;

-- Return rows whose lease expired to the queue, merging into a newer pending row of the same key
-- (the unique pending index forbids two). A row that has used up its attempts this way (a batch
-- that keeps killing its worker) becomes failed instead of looping.
CREATE FUNCTION algolia_sync_recover_expired(max_attempts integer) RETURNS integer
LANGUAGE plpgsql
-- Per-key checks as index probes whatever the (stale) statistics say; see get_pending_algolia_syncs.
SET enable_material = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET search_path FROM CURRENT AS $$
DECLARE
    recovered integer := 0;
    n integer;
BEGIN
    UPDATE algolia_sync_queue
       SET status = 'failed', claim_token = NULL, locked_until = NULL, updated_at = now(),
           last_error = format('lease expired after %s attempts (worker crashed or stalled while holding it)', attempts)
     WHERE status = 'processing' AND locked_until < now() AND attempts >= max_attempts;
    GET DIAGNOSTICS n = ROW_COUNT;
    recovered := recovered + n;

    DELETE FROM algolia_sync_queue q
     WHERE q.status = 'processing' AND q.locked_until < now()
       AND EXISTS (SELECT 1 FROM algolia_sync_queue p
                    WHERE p.status = 'pending' AND p.table_name = q.table_name AND p.record_id = q.record_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    recovered := recovered + n;

    BEGIN
        UPDATE algolia_sync_queue
           SET status = 'pending', claim_token = NULL, locked_until = NULL, updated_at = now(),
               next_attempt_at = now()
         WHERE status = 'processing' AND locked_until < now();
        GET DIAGNOSTICS n = ROW_COUNT;
        recovered := recovered + n;
    EXCEPTION WHEN unique_violation THEN
        -- A writer enqueued the same key between the two statements; the next claim retries.
        NULL;
    END;
    RETURN recovered;
END;
$$;

-- The claim: up to batch_size due rows, skipping rows other workers hold (SKIP LOCKED) and keys
-- that have a live claim (per-key serialization: an older state never overtakes a newer one).
-- Attempts are counted here, at claim time.
CREATE FUNCTION get_pending_algolia_syncs(
    batch_size integer,
    lease_ms integer DEFAULT 60000,
    token uuid DEFAULT gen_random_uuid(),
    worker text DEFAULT NULL
) RETURNS TABLE (id bigint, table_name text, record_id text, operation text, attempts integer,
                 created_at timestamptz, claim_token uuid)
LANGUAGE sql
-- The per-key check must be an index probe per candidate. Queue statistics are stale in any burst
-- (analyzed with no row processing, the planner materialized all 6,000 live claims and compared
-- every candidate with each: 13 s per claim); without material, hash and merge joins it cannot.
SET enable_material = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET search_path FROM CURRENT AS $$
    -- `id = ANY(ARRAY(...))`, not a join with a CTE: the planner cannot size a CTE and would hash
    -- the whole queue table on every claim, making a drain quadratic.
    UPDATE algolia_sync_queue q
       SET status = 'processing', claim_token = token, claimed_by = worker,
           -- clock_timestamp(), not now(): this UPDATE's snapshot is taken after the transaction
           -- started, so an ack committed in between would otherwise look like an overlapping claim.
           claimed_at = clock_timestamp(), locked_until = now() + make_interval(secs => lease_ms / 1000.0),
           attempts = q.attempts + 1, updated_at = now()
     WHERE q.id = ANY(ARRAY(
        SELECT d.id
          FROM algolia_sync_queue d
         WHERE d.status = 'pending' AND d.next_attempt_at <= now()
           AND NOT EXISTS (SELECT 1 FROM algolia_sync_queue p
                            WHERE p.status = 'processing' AND p.table_name = d.table_name
                              AND p.record_id = d.record_id AND p.locked_until >= now())
         ORDER BY d.next_attempt_at, d.id
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED))
    RETURNING q.id, q.table_name, q.record_id, q.operation, q.attempts, q.created_at, q.claim_token;
$$;

-- Acknowledge: delete the rows this claim still holds, log them, remember what was sent (hashes)
-- and forget deleted records. A worker that lost its lease (token no longer matches) acknowledges
-- nothing. The outcome goes through arrays, not one statement, so no row is changed twice in a statement.
CREATE FUNCTION algolia_sync_ack(ids bigint[], token uuid, actions text[] DEFAULT NULL,
                                 index_names text[] DEFAULT NULL, hashes bytea[] DEFAULT NULL,
                                 shapes bytea[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    acked     integer;
    a_id      bigint[];
    a_index   text[];
    a_record  text[];
    a_action  text[];
    a_hash    bytea[];
    a_shape   bytea[];
BEGIN
    WITH done AS (
        DELETE FROM algolia_sync_queue q
         WHERE q.id = ANY(ids) AND q.claim_token = token AND q.status = 'processing'
           AND q.locked_until >= now()  -- an expired claim acknowledges nothing: its rows go back
        RETURNING q.*
    ), superseded_failures AS (
        -- The key's current state is now in the index: earlier failures of it are moot.
        DELETE FROM algolia_sync_queue f
         USING done d
         WHERE f.status = 'failed' AND f.table_name = d.table_name AND f.record_id = d.record_id
    ), logged AS (
        INSERT INTO algolia_sync_log (queue_id, table_name, record_id, index_name, operation, action,
                                      status, attempts, claim_token, claimed_by, enqueued_at, claimed_at)
        SELECT d.id, d.table_name, d.record_id, x.index_name, d.operation, x.action,
               CASE WHEN x.action = 'skip' THEN 'skipped' ELSE 'success' END,
               d.attempts, d.claim_token, d.claimed_by, d.created_at, d.claimed_at
          FROM done d
          LEFT JOIN unnest(ids, actions, index_names) AS x(id, action, index_name) ON x.id = d.id
        RETURNING queue_id, record_id, index_name, action
    )
    SELECT count(*), array_agg(l.queue_id), array_agg(l.index_name), array_agg(l.record_id),
           array_agg(l.action), array_agg(h.hash), array_agg(h.shape)
      INTO acked, a_id, a_index, a_record, a_action, a_hash, a_shape
      FROM logged l
      LEFT JOIN unnest(ids, hashes, shapes) AS h(id, hash, shape) ON h.id = l.queue_id;

    IF acked > 0 AND hashes IS NOT NULL THEN
        INSERT INTO algolia_sync_hashes (index_name, object_id, hash, shape)
        SELECT DISTINCT ON (a.index_name, a.record_id) a.index_name, a.record_id, a.hash, a.shape
          FROM unnest(a_id, a_index, a_record, a_action, a_hash, a_shape)
               AS a(id, index_name, record_id, action, hash, shape)
         WHERE a.action IN ('updateObject', 'partialUpdateObject') AND a.hash IS NOT NULL
         ORDER BY a.index_name, a.record_id, a.id DESC
        ON CONFLICT (index_name, object_id) DO UPDATE SET hash = EXCLUDED.hash, shape = EXCLUDED.shape;
    END IF;
    IF acked > 0 AND 'deleteObject' = ANY(a_action) THEN
        DELETE FROM algolia_sync_hashes s
         USING unnest(a_index, a_record, a_action) AS a(index_name, record_id, action)
         WHERE a.action = 'deleteObject' AND s.index_name = a.index_name AND s.object_id = a.record_id;
    END IF;
    RETURN acked;
END;
$$;

-- Give rows back: retry later (with backoff), or fail for good. Only rows this claim still holds.
-- Rows going back to pending merge into a newer pending row of the same key instead of colliding
-- with it. count_attempt = false undoes the claim's attempt (throttling, graceful release).
CREATE FUNCTION algolia_sync_release(ids bigint[], token uuid, errors text[], delays_ms integer[],
                                     permanent boolean[], max_attempts integer,
                                     count_attempt boolean DEFAULT true) RETURNS integer
LANGUAGE plpgsql
SET enable_material = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET search_path FROM CURRENT AS $$
DECLARE
    changed integer := 0;
    n integer;
    tries integer := 0;
BEGIN
    -- Failed for good: a permanent error, or the attempts are spent.
    WITH r AS (
        SELECT * FROM unnest(ids, errors, delays_ms, permanent) AS u(id, error, delay_ms, permanent)
    ), gone AS (
        UPDATE algolia_sync_queue q
           SET status = 'failed', last_error = r.error, claim_token = NULL, locked_until = NULL,
               updated_at = now(),
               attempts = CASE WHEN count_attempt THEN q.attempts ELSE greatest(q.attempts - 1, 0) END
          FROM r
         WHERE q.id = r.id AND q.claim_token = token AND q.status = 'processing'
           AND (r.permanent OR (count_attempt AND q.attempts >= max_attempts))
        RETURNING q.*
    )
    INSERT INTO algolia_sync_log (queue_id, table_name, record_id, operation, status, attempts, error,
                                  claim_token, claimed_by, enqueued_at, claimed_at)
    SELECT g.id, g.table_name, g.record_id, g.operation, 'failed', g.attempts, g.last_error,
           token, g.claimed_by, g.created_at, g.claimed_at
      FROM gone g;
    GET DIAGNOSTICS n = ROW_COUNT;
    changed := changed + n;

    LOOP
        BEGIN
            -- A newer change to the key is already pending: it supersedes this row.
            DELETE FROM algolia_sync_queue q
             WHERE q.id = ANY(ids) AND q.claim_token = token AND q.status = 'processing'
               AND EXISTS (SELECT 1 FROM algolia_sync_queue p
                            WHERE p.status = 'pending' AND p.table_name = q.table_name
                              AND p.record_id = q.record_id);
            GET DIAGNOSTICS n = ROW_COUNT;
            changed := changed + n;

            UPDATE algolia_sync_queue q
               SET status = 'pending', last_error = r.error, claim_token = NULL, locked_until = NULL,
                   next_attempt_at = now() + make_interval(secs => r.delay_ms / 1000.0),
                   attempts = CASE WHEN count_attempt THEN q.attempts ELSE greatest(q.attempts - 1, 0) END,
                   updated_at = now()
              FROM unnest(ids, errors, delays_ms) AS r(id, error, delay_ms)
             WHERE q.id = r.id AND q.claim_token = token AND q.status = 'processing';
            GET DIAGNOSTICS n = ROW_COUNT;
            changed := changed + n;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            -- A writer enqueued one of these keys between the two statements: merge again.
            tries := tries + 1;
            IF tries > 5 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    RETURN changed;
END;
$$;

-- `workerpool retry-failed`: failed rows go back to the queue with fresh attempts, merging into a
-- pending row of the same key when one exists.
CREATE FUNCTION algolia_sync_retry_failed(only_table text DEFAULT NULL, only_ids bigint[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    changed integer := 0;
    n integer;
    tries integer := 0;
BEGIN
    LOOP
        BEGIN
            DELETE FROM algolia_sync_queue q
             WHERE q.status = 'failed'
               AND (only_table IS NULL OR q.table_name = only_table)
               AND (only_ids IS NULL OR q.id = ANY(only_ids))
               AND EXISTS (SELECT 1 FROM algolia_sync_queue p
                            WHERE p.status = 'pending' AND p.table_name = q.table_name
                              AND p.record_id = q.record_id);
            GET DIAGNOSTICS n = ROW_COUNT;
            changed := changed + n;
            -- Several failed rows of one key become one pending row (the newest).
            DELETE FROM algolia_sync_queue q
             WHERE q.status = 'failed'
               AND (only_table IS NULL OR q.table_name = only_table)
               AND (only_ids IS NULL OR q.id = ANY(only_ids))
               AND EXISTS (SELECT 1 FROM algolia_sync_queue o
                            WHERE o.status = 'failed' AND o.table_name = q.table_name
                              AND o.record_id = q.record_id AND o.id > q.id);
            GET DIAGNOSTICS n = ROW_COUNT;
            changed := changed + n;
            UPDATE algolia_sync_queue q
               SET status = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
             WHERE q.status = 'failed'
               AND (only_table IS NULL OR q.table_name = only_table)
               AND (only_ids IS NULL OR q.id = ANY(only_ids));
            GET DIAGNOSTICS n = ROW_COUNT;
            changed := changed + n;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            tries := tries + 1;
            IF tries > 5 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    IF changed > 0 THEN
        PERFORM pg_notify('algolia_sync', 'retry-failed');
    END IF;
    RETURN changed;
END;
$$;

-- Status counts per table and index (the seed's `SELECT * FROM algolia_sync_stats`).
CREATE VIEW algolia_sync_stats AS
SELECT c.table_name,
       c.index_name,
       count(q.id) FILTER (WHERE q.status = 'pending')    AS pending,
       count(q.id) FILTER (WHERE q.status = 'processing') AS processing,
       count(q.id) FILTER (WHERE q.status = 'failed')     AS failed,
       (SELECT count(*) FROM algolia_sync_log l
         WHERE l.table_name = c.table_name AND l.status = 'success'
           AND l.synced_at > now() - interval '1 hour')   AS completed_last_hour,
       min(q.created_at) FILTER (WHERE q.status = 'pending') AS oldest_pending_at,
       extract(epoch FROM now() - min(q.created_at) FILTER (WHERE q.status = 'pending'))::double precision
                                                          AS oldest_pending_age_s
  FROM algolia_index_config c
  LEFT JOIN algolia_sync_queue q ON q.table_name = c.table_name
 GROUP BY c.table_name, c.index_name;

-- Housekeeping: delete log rows (and any legacy completed queue rows) older than `days`.
CREATE FUNCTION cleanup_old_sync_records(days integer DEFAULT 7) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    n integer;
    total integer := 0;
BEGIN
    IF days IS NULL OR days < 0 THEN
        RAISE EXCEPTION 'cleanup_old_sync_records: days must be 0 or more, got %', days;
    END IF;
    DELETE FROM algolia_sync_log WHERE synced_at < now() - make_interval(days => days);
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM algolia_sync_queue WHERE status = 'completed' AND updated_at < now() - make_interval(days => days);
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM algolia_sync_workers WHERE heartbeat_at < now() - make_interval(days => days);
    RETURN total;
END;
$$;
