-- workerpool schema, version 9: an acknowledgement that costs Postgres less per record.
-- * A claim token means the row is being processed (a CHECK says so), so an acknowledgement finds its
--   rows by id and token alone: with `status = 'processing'` in its WHERE, stale statistics (a queue
--   analyzed before the burst) made the planner scan every processing row and compare each with all
--   of the claim's ids, quadratic in the batch size.
-- * algolia_sync_ack probes the claim's ids one by one through the primary key, joins the outcome
--   once, looks for earlier failures only when any failed row exists, and writes a hash only when
--   it is new or changed. A new parameter, `stored`, says which sent records had no hash when the
--   worker read them: those are plain INSERTs instead of upserts.

UPDATE algolia_sync_queue SET claim_token = NULL WHERE status <> 'processing' AND claim_token IS NOT NULL;
ALTER TABLE algolia_sync_queue
    ADD CONSTRAINT algolia_sync_queue_token_check CHECK (claim_token IS NULL OR status = 'processing');

DROP FUNCTION algolia_sync_ack(bigint[], uuid, text[], text[], bytea[], bytea[]);

CREATE FUNCTION algolia_sync_ack(ids bigint[], token uuid, actions text[] DEFAULT NULL,
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
        SELECT d.*, x.action, x.index_name, x.hash, x.shape, x.stored,
               x.action IN ('updateObject', 'partialUpdateObject') AND x.hash IS NOT NULL AS sent
          FROM done d
          LEFT JOIN unnest(ids, actions, index_names, hashes, shapes, stored)
                    AS x(id, action, index_name, hash, shape, stored) ON x.id = d.id
    ), logged AS (
        INSERT INTO algolia_sync_log (queue_id, table_name, record_id, index_name, operation, action,
                                      status, attempts, claim_token, claimed_by, enqueued_at, claimed_at)
        SELECT o.id, o.table_name, o.record_id, o.index_name, o.operation, o.action,
               CASE WHEN o.action = 'skip' THEN 'skipped' ELSE 'success' END,
               o.attempts, token, o.claimed_by, o.created_at, o.claimed_at
          FROM outcome o
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
