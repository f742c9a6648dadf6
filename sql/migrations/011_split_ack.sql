-- workerpool schema, version 11: an acknowledgement that joins nothing in the common case.
-- * The worker passes its records in id order and already split into the hash groups it knows
--   (first hashes, other sent records, deleted records), each with its queue ids and record ids.
-- * When the claim still held every row it names (the rows deleted, in id order, are the ids
--   passed), algolia_sync_ack writes the log row from the deleted rows' arrays side by side with
--   the worker's, and the hash groups as given: no join of the outcome with the worker's arrays,
--   no FILTERed aggregate splitting them. Otherwise (a lost lease, or a call without the groups)
--   it joins as before, for the rows acknowledged only, and logs them in the call's order.
-- The new parameters come last, DEFAULT NULL: a call of the old form takes the joining path.

DROP FUNCTION algolia_sync_ack(bigint[], uuid, text[], text[], bytea[], bytea[], boolean[]);

CREATE FUNCTION algolia_sync_ack(ids bigint[], token uuid, actions text[] DEFAULT NULL,
                                 index_names text[] DEFAULT NULL, hashes bytea[] DEFAULT NULL,
                                 shapes bytea[] DEFAULT NULL, stored boolean[] DEFAULT NULL,
                                 new_ids bigint[] DEFAULT NULL, new_indexes text[] DEFAULT NULL,
                                 new_records text[] DEFAULT NULL, new_hashes bytea[] DEFAULT NULL,
                                 new_shapes bytea[] DEFAULT NULL, sent_ids bigint[] DEFAULT NULL,
                                 sent_indexes text[] DEFAULT NULL, sent_records text[] DEFAULT NULL,
                                 sent_hashes bytea[] DEFAULT NULL, sent_shapes bytea[] DEFAULT NULL,
                                 gone_ids bigint[] DEFAULT NULL, gone_indexes text[] DEFAULT NULL,
                                 gone_records text[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    acked        integer;
    d_ids        bigint[];   -- the rows acknowledged, in id order
    d_tables     text[];
    d_records    text[];
    d_operations text[];
    d_attempts   integer[];
    d_by         text[];
    d_enqueued   timestamptz[];
    d_claimed    timestamptz[];
    n_id         bigint[];   -- sent records of keys that had no hash when the worker read them
    n_index      text[];
    n_record     text[];
    n_hash       bytea[];
    n_shape      bytea[];
    u_id         bigint[];   -- the other sent records
    u_index      text[];
    u_record     text[];
    u_hash       bytea[];
    u_shape      bytea[];
    g_index      text[];     -- deleted records
    g_record     text[];
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
    )
    SELECT count(*), array_agg(d.id), array_agg(d.table_name), array_agg(d.record_id), array_agg(d.operation),
           array_agg(d.attempts), array_agg(d.claimed_by), array_agg(d.created_at), array_agg(d.claimed_at)
      INTO acked, d_ids, d_tables, d_records, d_operations, d_attempts, d_by, d_enqueued, d_claimed
      FROM (SELECT * FROM done ORDER BY id) d;
    IF acked = 0 THEN
        RETURN 0;
    END IF;

    IF new_ids IS NOT NULL AND d_ids = ids AND cardinality(actions) = acked
       AND cardinality(index_names) = acked AND acked <= 1048576
       AND cardinality(array_remove(d_by, d_by[1])) = 0 THEN
        -- The common case: the worker passed its records in id order, split into the hash groups,
        -- and this claim still held every one of them under one worker. The log row is the rows
        -- deleted side by side with the worker's arrays, the hash groups are written as given: no
        -- join of the two, no aggregate splitting them.
        INSERT INTO algolia_sync_log_batches (claim_token, claimed_by, queue_ids, table_names, record_ids,
                                              index_names, operations, actions, statuses, attempts,
                                              enqueued_at, claimed_at)
        VALUES (token, d_by[1], d_ids, d_tables, d_records, index_names, d_operations, actions,
                ARRAY(SELECT CASE WHEN a.action = 'skip' THEN 'skipped' ELSE 'success' END
                        FROM unnest(actions) AS a(action)),
                d_attempts, d_enqueued, d_claimed);
        n_id := new_ids; n_index := new_indexes; n_record := new_records; n_hash := new_hashes;
        n_shape := new_shapes;
        u_id := sent_ids; u_index := sent_indexes; u_record := sent_records; u_hash := sent_hashes;
        u_shape := sent_shapes;
        g_index := gone_indexes; g_record := gone_records;
    ELSE
        -- Some of the worker's rows were not acknowledged (their lease was lost), or the call did
        -- not split its records (new_ids NULL): the rows acknowledged joined with the worker's
        -- arrays, in the call's order, logged and split into the hash groups here.
        WITH outcome AS MATERIALIZED (
            SELECT d.*, x.action, x.index_name, x.hash, x.shape, x.stored, x.pos,
                   x.action IN ('updateObject', 'partialUpdateObject') AND x.hash IS NOT NULL AS sent
              FROM unnest(d_ids, d_tables, d_records, d_operations, d_attempts, d_by, d_enqueued, d_claimed)
                   AS d(id, table_name, record_id, operation, attempts, claimed_by, created_at, claimed_at)
              LEFT JOIN unnest(ids, actions, index_names, hashes, shapes, stored) WITH ORDINALITY
                        AS x(id, action, index_name, hash, shape, stored, pos) ON x.id = d.id
        ), logged AS (
            -- One log row for the whole call (see algolia_sync_log_batches); the groups are one per
            -- claim in practice, split only past the view's 2^20 records per batch.
            INSERT INTO algolia_sync_log_batches (claim_token, claimed_by, queue_ids, table_names, record_ids,
                                                  index_names, operations, actions, statuses, attempts,
                                                  enqueued_at, claimed_at)
            SELECT token, o.claimed_by, array_agg(o.id ORDER BY o.pos, o.id),
                   array_agg(o.table_name ORDER BY o.pos, o.id), array_agg(o.record_id ORDER BY o.pos, o.id),
                   array_agg(o.index_name ORDER BY o.pos, o.id), array_agg(o.operation ORDER BY o.pos, o.id),
                   array_agg(o.action ORDER BY o.pos, o.id),
                   array_agg(CASE WHEN o.action = 'skip' THEN 'skipped' ELSE 'success' END ORDER BY o.pos, o.id),
                   array_agg(o.attempts ORDER BY o.pos, o.id), array_agg(o.created_at ORDER BY o.pos, o.id),
                   array_agg(o.claimed_at ORDER BY o.pos, o.id)
              FROM outcome o
             GROUP BY o.claimed_by, o.pos / 1048576
        )
        SELECT count(*),
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
          INTO acked, n_id, n_index, n_record, n_hash, n_shape, u_id, u_index, u_record, u_hash, u_shape,
               g_index, g_record
          FROM outcome o;
        IF new_ids IS NOT NULL THEN
            -- The worker's hash groups, kept for the rows acknowledged only (a hashed semi-join).
            SELECT array_agg(a.id), array_agg(a.index_name), array_agg(a.record_id), array_agg(a.hash),
                   array_agg(a.shape)
              INTO n_id, n_index, n_record, n_hash, n_shape
              FROM unnest(new_ids, new_indexes, new_records, new_hashes, new_shapes)
                   AS a(id, index_name, record_id, hash, shape)
             WHERE a.id IN (SELECT unnest(d_ids));
            SELECT array_agg(a.id), array_agg(a.index_name), array_agg(a.record_id), array_agg(a.hash),
                   array_agg(a.shape)
              INTO u_id, u_index, u_record, u_hash, u_shape
              FROM unnest(sent_ids, sent_indexes, sent_records, sent_hashes, sent_shapes)
                   AS a(id, index_name, record_id, hash, shape)
             WHERE a.id IN (SELECT unnest(d_ids));
            SELECT array_agg(a.index_name), array_agg(a.record_id)
              INTO g_index, g_record
              FROM unnest(gone_ids, gone_indexes, gone_records) AS a(id, index_name, record_id)
             WHERE a.id IN (SELECT unnest(d_ids));
        END IF;
    END IF;

    -- The keys' current state is now in the index: earlier failures of them are moot. Probed per key
    -- (LATERAL with OFFSET 0 is never flattened into a join: as a join, with statistics taken before
    -- the failures piled up, the plan compared every failed row with every acknowledged one), and
    -- only when any failed row exists at all.
    IF EXISTS (SELECT 1 FROM algolia_sync_queue f WHERE f.status = 'failed') THEN
        DELETE FROM algolia_sync_queue f
         WHERE f.id = ANY(ARRAY(
            SELECT s.id
              FROM unnest(d_tables, d_records) AS a(table_name, record_id)
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
    IF cardinality(n_id) > 0 THEN
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
    IF cardinality(u_id) > 0 THEN
        INSERT INTO algolia_sync_hashes AS s (index_name, object_id, hash, shape)
        SELECT DISTINCT ON (a.index_name, a.record_id) a.index_name, a.record_id, a.hash, a.shape
          FROM unnest(u_id, u_index, u_record, u_hash, u_shape) AS a(id, index_name, record_id, hash, shape)
         ORDER BY a.index_name, a.record_id, a.id DESC
        ON CONFLICT (index_name, object_id) DO UPDATE SET hash = EXCLUDED.hash, shape = EXCLUDED.shape
         WHERE (s.hash, s.shape) IS DISTINCT FROM (EXCLUDED.hash, EXCLUDED.shape);
    END IF;
    IF cardinality(g_index) > 0 THEN
        DELETE FROM algolia_sync_hashes s
         USING unnest(g_index, g_record) AS a(index_name, record_id)
         WHERE s.index_name = a.index_name AND s.object_id = a.record_id;
    END IF;
    RETURN acked;
END;
$$;
