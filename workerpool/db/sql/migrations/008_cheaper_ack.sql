-- workerpool schema, version 8: an acknowledgement that costs Postgres less per record.
-- * A claim token means the row is being processed (a CHECK says so), so an acknowledgement finds its
--   rows by id and token alone: with `status = 'processing'` in its WHERE, stale statistics (a queue
--   analyzed before the burst) made the planner scan every processing row and compare each with all
--   of the claim's ids, quadratic in the batch size.
-- * algolia_sync_ack probes the claim's ids one by one through the primary key, joins the outcome
--   once, looks for earlier failures only when any failed row exists, and writes a hash only when
--   it is new or changed.

UPDATE algolia_sync_queue SET claim_token = NULL WHERE status <> 'processing' AND claim_token IS NOT NULL;
ALTER TABLE algolia_sync_queue
    ADD CONSTRAINT algolia_sync_queue_token_check CHECK (claim_token IS NULL OR status = 'processing');

CREATE OR REPLACE FUNCTION algolia_sync_ack(ids bigint[], token uuid, actions text[] DEFAULT NULL,
                                 index_names text[] DEFAULT NULL, hashes bytea[] DEFAULT NULL,
                                 shapes bytea[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    acked     integer;
    a_table   text[];
    a_record  text[];
    h_index   text[];
    h_record  text[];
    h_hash    bytea[];
    h_shape   bytea[];
    g_index   text[];
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
        SELECT d.*, x.action, x.index_name, x.hash, x.shape
          FROM done d
          LEFT JOIN unnest(ids, actions, index_names, hashes, shapes) AS x(id, action, index_name, hash, shape)
            ON x.id = d.id
    ), logged AS (
        INSERT INTO algolia_sync_log (queue_id, table_name, record_id, index_name, operation, action,
                                      status, attempts, claim_token, claimed_by, enqueued_at, claimed_at)
        SELECT d.id, d.table_name, d.record_id, d.index_name, d.operation, d.action,
               CASE WHEN d.action = 'skip' THEN 'skipped' ELSE 'success' END,
               d.attempts, token, d.claimed_by, d.created_at, d.claimed_at
          FROM outcome d
    )
    SELECT count(*), array_agg(d.table_name), array_agg(d.record_id),
           array_agg(d.index_name) FILTER (WHERE d.action IN ('updateObject', 'partialUpdateObject') AND d.hash IS NOT NULL),
           array_agg(d.record_id) FILTER (WHERE d.action IN ('updateObject', 'partialUpdateObject') AND d.hash IS NOT NULL),
           array_agg(d.hash) FILTER (WHERE d.action IN ('updateObject', 'partialUpdateObject') AND d.hash IS NOT NULL),
           array_agg(d.shape) FILTER (WHERE d.action IN ('updateObject', 'partialUpdateObject') AND d.hash IS NOT NULL),
           array_agg(d.index_name) FILTER (WHERE d.action = 'deleteObject'),
           array_agg(d.record_id) FILTER (WHERE d.action = 'deleteObject')
      INTO acked, a_table, a_record, h_index, h_record, h_hash, h_shape, g_index, g_record
      FROM outcome d;
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
    -- What was sent, for skip-unchanged: a hash is written only when it is new or changed.
    IF h_index IS NOT NULL THEN
        INSERT INTO algolia_sync_hashes AS s (index_name, object_id, hash, shape)
        SELECT DISTINCT ON (a.index_name COLLATE "C", a.record_id COLLATE "C") a.index_name, a.record_id, a.hash, a.shape
          FROM unnest(h_index, h_record, h_hash, h_shape) WITH ORDINALITY AS a(index_name, record_id, hash, shape, n)
         ORDER BY a.index_name COLLATE "C", a.record_id COLLATE "C", a.n DESC
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
