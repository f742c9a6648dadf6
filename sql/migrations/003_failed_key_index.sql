-- workerpool schema, version 3: acknowledging stays linear however many rows have failed.
-- `algolia_sync_ack` dropped the failed rows of each acknowledged key with a join that stale statistics
-- (taken while nothing had failed) turned into every-failed-row x every-acked-row: 32 s per 1,000-row
-- batch with 100,000 failed rows. The failed rows are now found per key, through an index on their
-- keys, which replaces the one on (table_name, created_at): with both, the planner probed the old
-- one by table_name alone and still read every failed row of the table for each key. (Building the
-- index briefly blocks writes to the queue; it covers failed rows only.)
CREATE INDEX IF NOT EXISTS algolia_sync_queue_failed_key
    ON algolia_sync_queue (table_name, record_id) WHERE status = 'failed';
DROP INDEX IF EXISTS algolia_sync_queue_failed;

CREATE OR REPLACE FUNCTION algolia_sync_ack(ids bigint[], token uuid, actions text[] DEFAULT NULL,
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
        -- The key's current state is now in the index: earlier failures of it are moot. Probed per
        -- acknowledged key (LATERAL with OFFSET 0 is never flattened into a join): as a join, with
        -- statistics taken before the failures piled up, the plan compared every failed row with
        -- every acknowledged one, 100,000 failed x 1,000 acked = 32 s per batch.
        DELETE FROM algolia_sync_queue f
         WHERE f.id = ANY(ARRAY(
            SELECT s.id
              FROM done d
             CROSS JOIN LATERAL (SELECT p.id FROM algolia_sync_queue p
                                  WHERE p.status = 'failed' AND p.table_name = d.table_name
                                    AND p.record_id = d.record_id
                                 OFFSET 0) s))
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
