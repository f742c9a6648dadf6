-- workerpool schema, version 10: the sync log written once per call, not once per record.
-- * algolia_sync_log_batches holds one row per acknowledgement or release call, its records as
--   arrays (a row per record cost Postgres ~3 us per synced record in heap and btree writes).
-- * algolia_sync_log becomes a view with the same columns, one row per record; an INSERT into it
--   writes a call of one record. A record's id is its call's id times 2^20 plus its place in the call.
-- * algolia_sync_ack and algolia_sync_release write one batch row per call; cleanup_old_sync_records
--   deletes whole calls.
-- The existing log rows are carried over, grouped by claim, worker and synced_at (the rows of one
-- call), each group's id its smallest row id, its records in id order: ids keep their order, and the
-- batches written from now on come after all of them.

DROP VIEW algolia_sync_stats;
ALTER TABLE algolia_sync_log RENAME TO algolia_sync_log_old;
ALTER INDEX algolia_sync_log_synced_at RENAME TO algolia_sync_log_old_synced_at;

CREATE TABLE algolia_sync_log_batches (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    synced_at    timestamptz NOT NULL DEFAULT now(),
    claim_token  uuid,
    claimed_by   text,
    queue_ids    bigint[],
    table_names  text[] NOT NULL,
    record_ids   text[] NOT NULL,
    index_names  text[],
    operations   text[] NOT NULL,
    actions      text[],
    statuses     text[] NOT NULL,
    attempts     integer[] NOT NULL,
    errors       text[],
    enqueued_at  timestamptz[],
    claimed_at   timestamptz[],
    -- 1 to 2^20 records (the view's ids leave room for no more), one per element of each array.
    CONSTRAINT algolia_sync_log_batches_records_check CHECK (
        cardinality(table_names) BETWEEN 1 AND 1048576
        AND cardinality(record_ids) = cardinality(table_names)
        AND cardinality(operations) = cardinality(table_names)
        AND cardinality(statuses) = cardinality(table_names)
        AND cardinality(attempts) = cardinality(table_names)
        AND array_position(table_names, NULL) IS NULL AND array_position(record_ids, NULL) IS NULL
        AND array_position(operations, NULL) IS NULL AND array_position(attempts, NULL) IS NULL),
    CONSTRAINT algolia_sync_log_batches_statuses_check
        CHECK (statuses <@ ARRAY['success', 'failed', 'retry', 'skipped'])
) WITH (autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_vacuum_insert_scale_factor = 0.05,
        autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX algolia_sync_log_batches_synced_at ON algolia_sync_log_batches (synced_at);

-- The arrays of a 1,000-record call take ~100 kB: TOAST compresses them. pglz, the default, spends
-- ~1.9 us per record doing it (measured: 2.4 us per record written, against 0.6 with lz4, 0.85 with
-- no compression and 2.6 for a row per record); lz4 is cheap and stores a fifth of uncompressed (4.5
-- against 24 MB per 100,000 records). A server built without lz4 stores them uncompressed (EXTERNAL).
DO $$
DECLARE
    col  text;
    lz4  boolean := EXISTS (SELECT 1 FROM pg_settings
                             WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals));
BEGIN
    FOREACH col IN ARRAY ARRAY['queue_ids', 'table_names', 'record_ids', 'index_names', 'operations',
                               'actions', 'statuses', 'attempts', 'errors', 'enqueued_at', 'claimed_at'] LOOP
        IF lz4 THEN
            EXECUTE format('ALTER TABLE algolia_sync_log_batches ALTER COLUMN %I SET COMPRESSION lz4', col);
        ELSE
            EXECUTE format('ALTER TABLE algolia_sync_log_batches ALTER COLUMN %I SET STORAGE EXTERNAL', col);
        END IF;
    END LOOP;
END;
$$;

-- The seed's log, one row per record, with its columns and types. A record's id is its call's id
-- times 2^20 plus its place in the call: unique, and growing with time as the calls' ids do (a writer
-- splits a call of more than 2^20 records). A WHERE on synced_at (or claim_token, claimed_by) applies
-- to the calls, through their synced_at index, before any array is unnested.
CREATE VIEW algolia_sync_log AS
SELECT b.id * 1048576 + r.n AS id, r.queue_id, r.table_name, r.record_id, r.index_name, r.operation,
       r.action, r.status, r.attempts, r.error, b.claim_token, b.claimed_by, r.enqueued_at, r.claimed_at,
       b.synced_at
  FROM algolia_sync_log_batches b
 CROSS JOIN LATERAL unnest(b.queue_ids, b.table_names, b.record_ids, b.index_names, b.operations, b.actions,
                           b.statuses, b.attempts, b.errors, b.enqueued_at, b.claimed_at)
       WITH ORDINALITY AS r(queue_id, table_name, record_id, index_name, operation, action, status, attempts,
                            error, enqueued_at, claimed_at, n);
ALTER VIEW algolia_sync_log ALTER COLUMN attempts SET DEFAULT 0;
ALTER VIEW algolia_sync_log ALTER COLUMN synced_at SET DEFAULT now();

-- Writing a log row by hand (tests, an operator's note) still works: each becomes a call of one record.
-- The id is assigned, as it was by the table's identity column.
CREATE FUNCTION algolia_sync_log_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.id IS NOT NULL THEN
        RAISE EXCEPTION 'cannot insert a non-DEFAULT value into column "id" of algolia_sync_log'
              USING ERRCODE = 'generated_always', HINT = 'Leave id out: it is assigned.';
    END IF;
    INSERT INTO algolia_sync_log_batches (synced_at, claim_token, claimed_by, queue_ids, table_names, record_ids,
                                          index_names, operations, actions, statuses, attempts, errors,
                                          enqueued_at, claimed_at)
    VALUES (NEW.synced_at, NEW.claim_token, NEW.claimed_by, ARRAY[NEW.queue_id], ARRAY[NEW.table_name],
            ARRAY[NEW.record_id], ARRAY[NEW.index_name], ARRAY[NEW.operation], ARRAY[NEW.action],
            ARRAY[NEW.status], ARRAY[NEW.attempts], ARRAY[NEW.error], ARRAY[NEW.enqueued_at],
            ARRAY[NEW.claimed_at])
    RETURNING id * 1048576 + 1 INTO NEW.id;
    RETURN NEW;
END;
$$;
CREATE TRIGGER algolia_sync_log_insert INSTEAD OF INSERT ON algolia_sync_log
    FOR EACH ROW EXECUTE FUNCTION algolia_sync_log_insert();

INSERT INTO algolia_sync_log_batches (id, synced_at, claim_token, claimed_by, queue_ids, table_names, record_ids,
                                      index_names, operations, actions, statuses, attempts, errors,
                                      enqueued_at, claimed_at)
OVERRIDING SYSTEM VALUE
SELECT min(l.id), l.synced_at, l.claim_token, l.claimed_by, array_agg(l.queue_id ORDER BY l.id),
       array_agg(l.table_name ORDER BY l.id), array_agg(l.record_id ORDER BY l.id),
       array_agg(l.index_name ORDER BY l.id), array_agg(l.operation ORDER BY l.id),
       array_agg(l.action ORDER BY l.id), array_agg(l.status ORDER BY l.id), array_agg(l.attempts ORDER BY l.id),
       array_agg(l.error ORDER BY l.id), array_agg(l.enqueued_at ORDER BY l.id),
       array_agg(l.claimed_at ORDER BY l.id)
  FROM (SELECT o.*, (row_number() OVER (PARTITION BY o.claim_token, o.claimed_by, o.synced_at ORDER BY o.id) - 1)
                    / 1048576 AS part
          FROM algolia_sync_log_old o) l
 GROUP BY l.claim_token, l.claimed_by, l.synced_at, l.part;
SELECT setval(pg_get_serial_sequence('algolia_sync_log_batches', 'id'), max(id)) FROM algolia_sync_log_old;
DROP TABLE algolia_sync_log_old;

CREATE VIEW algolia_sync_stats AS
SELECT c.table_name,
       c.index_name,
       count(q.id) FILTER (WHERE q.status = 'pending') + coalesce(i.keys, 0) AS pending,
       count(q.id) FILTER (WHERE q.status = 'processing') AS processing,
       count(q.id) FILTER (WHERE q.status = 'failed')     AS failed,
       (SELECT count(*) FROM algolia_sync_log_batches l, unnest(l.table_names, l.statuses) AS r(table_name, status)
         WHERE r.table_name = c.table_name AND r.status = 'success'
           AND l.synced_at > now() - interval '1 hour')   AS completed_last_hour,
       least(min(q.created_at) FILTER (WHERE q.status = 'pending'), i.oldest) AS oldest_pending_at,
       extract(epoch FROM now() - least(min(q.created_at) FILTER (WHERE q.status = 'pending'), i.oldest))::double precision
                                                          AS oldest_pending_age_s
  FROM algolia_index_config c
  LEFT JOIN algolia_sync_queue q ON q.table_name = c.table_name
  LEFT JOIN LATERAL (SELECT sum(x.keys) AS keys, min(x.created_at) AS oldest
                       FROM algolia_sync_inbox x WHERE x.table_name = c.table_name) i ON true
 GROUP BY c.table_name, c.index_name, i.keys, i.oldest;

CREATE OR REPLACE FUNCTION algolia_sync_ack(ids bigint[], token uuid, actions text[] DEFAULT NULL,
                                 index_names text[] DEFAULT NULL, hashes bytea[] DEFAULT NULL,
                                 shapes bytea[] DEFAULT NULL, stored boolean[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    acked     integer;
    a_table   text[];
    a_record  text[];
    n_id      bigint[];   -- sent records of keys that had no hash when the worker read them
    n_index   text[];
    n_record  text[];
    n_hash    bytea[];
    n_shape   bytea[];
    u_id      bigint[];   -- the other sent records
    u_index   text[];
    u_record  text[];
    u_hash    bytea[];
    u_shape   bytea[];
    g_index   text[];     -- deleted records
    g_record  text[];
BEGIN
    WITH done AS (
        -- Each id probed through the primary key, the row deleted by its ctid: no plan can scan the
        -- rows being processed and compare each with every id. The token implies 'processing'
        -- (algolia_sync_queue_token_check); an expired claim acknowledges nothing, its rows go back.
        DELETE FROM algolia_sync_queue q
         WHERE q.ctid = ANY(ARRAY(
            SELECT p.ctid FROM unnest(ids) AS u(id)
             CROSS JOIN LATERAL (SELECT p.ctid FROM algolia_sync_queue p WHERE p.id = u.id OFFSET 0) p))
           AND q.claim_token = token AND q.locked_until >= now()
        RETURNING q.id, q.table_name, q.record_id, q.operation, q.attempts, q.claimed_by, q.created_at,
                  q.claimed_at
    ), outcome AS (
        SELECT d.*, x.action, x.index_name, x.hash, x.shape, x.stored, x.pos,
               x.action IN ('updateObject', 'partialUpdateObject') AND x.hash IS NOT NULL AS sent
          FROM done d
          LEFT JOIN unnest(ids, actions, index_names, hashes, shapes, stored) WITH ORDINALITY
                    AS x(id, action, index_name, hash, shape, stored, pos) ON x.id = d.id
    ), logged AS (
        -- One log row for the whole call (see algolia_sync_log_batches); the groups are one per
        -- claim in practice, split only past the view's 2^20 records per batch.
        INSERT INTO algolia_sync_log_batches (claim_token, claimed_by, queue_ids, table_names, record_ids,
                                              index_names, operations, actions, statuses, attempts,
                                              enqueued_at, claimed_at)
        SELECT token, o.claimed_by, array_agg(o.id), array_agg(o.table_name), array_agg(o.record_id),
               array_agg(o.index_name), array_agg(o.operation), array_agg(o.action),
               array_agg(CASE WHEN o.action = 'skip' THEN 'skipped' ELSE 'success' END),
               array_agg(o.attempts), array_agg(o.created_at), array_agg(o.claimed_at)
          FROM outcome o
         GROUP BY o.claimed_by, o.pos / 1048576
    )
    SELECT count(*), array_agg(o.table_name), array_agg(o.record_id),
           array_agg(o.id) FILTER (WHERE o.sent AND o.stored IS FALSE),
           array_agg(o.index_name) FILTER (WHERE o.sent AND o.stored IS FALSE),
           array_agg(o.record_id) FILTER (WHERE o.sent AND o.stored IS FALSE),
           array_agg(o.hash) FILTER (WHERE o.sent AND o.stored IS FALSE),
           array_agg(o.shape) FILTER (WHERE o.sent AND o.stored IS FALSE),
           array_agg(o.id) FILTER (WHERE o.sent AND o.stored IS NOT FALSE),
           array_agg(o.index_name) FILTER (WHERE o.sent AND o.stored IS NOT FALSE),
           array_agg(o.record_id) FILTER (WHERE o.sent AND o.stored IS NOT FALSE),
           array_agg(o.hash) FILTER (WHERE o.sent AND o.stored IS NOT FALSE),
           array_agg(o.shape) FILTER (WHERE o.sent AND o.stored IS NOT FALSE),
           array_agg(o.index_name) FILTER (WHERE o.action = 'deleteObject'),
           array_agg(o.record_id) FILTER (WHERE o.action = 'deleteObject')
      INTO acked, a_table, a_record, n_id, n_index, n_record, n_hash, n_shape,
           u_id, u_index, u_record, u_hash, u_shape, g_index, g_record
      FROM outcome o;
    IF acked = 0 THEN
        RETURN 0;
    END IF;

    -- The keys' current state is now in the index: earlier failures of them are moot. Probed per key
    -- (LATERAL with OFFSET 0 is never flattened into a join: as a join, with statistics taken before
    -- the failures piled up, the plan compared every failed row with every acknowledged one), and
    -- only when any failed row exists at all.
    IF EXISTS (SELECT 1 FROM algolia_sync_queue f WHERE f.status = 'failed') THEN
        DELETE FROM algolia_sync_queue f
         WHERE f.id = ANY(ARRAY(
            SELECT s.id
              FROM unnest(a_table, a_record) AS a(table_name, record_id)
             CROSS JOIN LATERAL (SELECT p.id FROM algolia_sync_queue p
                                  WHERE p.status = 'failed' AND p.table_name = a.table_name
                                    AND p.record_id = a.record_id
                                 OFFSET 0) s));
    END IF;

    -- What was sent, for skip-unchanged. A record whose key had no hash when the worker read it
    -- (stored = false) is a plain INSERT, which costs less than an upsert's speculative insertion;
    -- should one of those keys have been inserted meanwhile (another table feeding the same index,
    -- or the same key twice in this batch), the INSERT fails and they are upserted with the rest.
    -- An upsert writes only a hash or shape that changed; the newest queue row of a key wins.
    IF n_id IS NOT NULL THEN
        BEGIN
            INSERT INTO algolia_sync_hashes (index_name, object_id, hash, shape)
            SELECT * FROM unnest(n_index, n_record, n_hash, n_shape);
        EXCEPTION WHEN unique_violation THEN
            u_id := u_id || n_id;
            u_index := u_index || n_index;
            u_record := u_record || n_record;
            u_hash := u_hash || n_hash;
            u_shape := u_shape || n_shape;
        END;
    END IF;
    IF u_id IS NOT NULL THEN
        INSERT INTO algolia_sync_hashes AS s (index_name, object_id, hash, shape)
        SELECT DISTINCT ON (a.index_name, a.record_id) a.index_name, a.record_id, a.hash, a.shape
          FROM unnest(u_id, u_index, u_record, u_hash, u_shape) AS a(id, index_name, record_id, hash, shape)
         ORDER BY a.index_name, a.record_id, a.id DESC
        ON CONFLICT (index_name, object_id) DO UPDATE SET hash = EXCLUDED.hash, shape = EXCLUDED.shape
         WHERE (s.hash, s.shape) IS DISTINCT FROM (EXCLUDED.hash, EXCLUDED.shape);
    END IF;
    IF g_index IS NOT NULL THEN
        DELETE FROM algolia_sync_hashes s
         USING unnest(g_index, g_record) AS a(index_name, record_id)
         WHERE s.index_name = a.index_name AND s.object_id = a.record_id;
    END IF;
    RETURN acked;
END;
$$;

CREATE OR REPLACE FUNCTION algolia_sync_release(ids bigint[], token uuid, errors text[], delays_ms integer[],
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
        SELECT * FROM unnest(ids, errors, delays_ms, permanent) WITH ORDINALITY
                      AS u(id, error, delay_ms, permanent, pos)
    ), gone AS (
        UPDATE algolia_sync_queue q
           SET status = 'failed', last_error = r.error, claim_token = NULL, locked_until = NULL,
               updated_at = now(),
               attempts = CASE WHEN count_attempt THEN q.attempts ELSE greatest(q.attempts - 1, 0) END
          FROM r
         WHERE q.id = r.id AND q.claim_token = token AND q.status = 'processing'
           AND (r.permanent OR (count_attempt AND q.attempts >= max_attempts))
        RETURNING q.*, r.pos
    ), logged AS (
        -- One log row for the rows failed for good (no index name or action: nothing was sent).
        INSERT INTO algolia_sync_log_batches (claim_token, claimed_by, queue_ids, table_names, record_ids,
                                              operations, statuses, attempts, errors, enqueued_at, claimed_at)
        SELECT token, g.claimed_by, array_agg(g.id), array_agg(g.table_name), array_agg(g.record_id),
               array_agg(g.operation), array_agg('failed'::text), array_agg(g.attempts),
               array_agg(g.last_error), array_agg(g.created_at), array_agg(g.claimed_at)
          FROM gone g
         GROUP BY g.claimed_by, g.pos / 1048576
    )
    SELECT count(*) INTO n FROM gone;
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

CREATE OR REPLACE FUNCTION cleanup_old_sync_records(days integer DEFAULT 7) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    n integer;
BEGIN
    IF days IS NULL OR days < 0 THEN
        RAISE EXCEPTION 'cleanup_old_sync_records: days must be 0 or more, got %', days;
    END IF;
    WITH gone AS (
        DELETE FROM algolia_sync_log_batches WHERE synced_at < now() - make_interval(days => days)
        RETURNING cardinality(table_names) AS records
    )
    SELECT coalesce(sum(records), 0) INTO n FROM gone;
    DELETE FROM algolia_sync_workers WHERE heartbeat_at < now() - make_interval(days => days);
    RETURN n;
END;
$$;
