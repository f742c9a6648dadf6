-- workerpool schema, version 16 (no 15 on this branch: that number is another branch's). Keys
-- over algolia_sync_max_key_bytes(): the spill records each one as one failed row however often it
-- is spilled (a hot over-long key added a row per spill), and `retry-failed` leaves those rows alone:
-- their record_id is the key's first bytes only, so the worker read no row for it, sent a delete for
-- that truncated objectID and acknowledged it, erasing the evidence.

-- Whether a failed row is the spill's record of a key over algolia_sync_max_key_bytes(): its
-- record_id is only the key's first bytes, so it can never be synced, and `retry-failed` must leave
-- it (and its reason) in place instead of sending a delete for that truncated objectID.
CREATE FUNCTION algolia_sync_key_too_long(record_id text, last_error text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT record_id LIKE '%…' AND last_error LIKE 'key is % bytes long, over the %-byte limit for an objectID:%'
$$;

CREATE OR REPLACE FUNCTION algolia_sync_retry_failed(only_table text DEFAULT NULL, only_ids bigint[] DEFAULT NULL)
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
               AND NOT algolia_sync_key_too_long(q.record_id, q.last_error)
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
               AND NOT algolia_sync_key_too_long(q.record_id, q.last_error)
               AND EXISTS (SELECT 1 FROM algolia_sync_queue o
                            WHERE o.status = 'failed' AND o.table_name = q.table_name
                              AND o.record_id = q.record_id AND o.id > q.id);
            GET DIAGNOSTICS n = ROW_COUNT;
            changed := changed + n;
            UPDATE algolia_sync_queue q
               SET status = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
             WHERE q.status = 'failed'
               AND (only_table IS NULL OR q.table_name = only_table)
               AND (only_ids IS NULL OR q.id = ANY(only_ids))
               AND NOT algolia_sync_key_too_long(q.record_id, q.last_error);
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
        PERFORM pg_notify(algolia_sync_channel(), 'retry-failed');
    END IF;
    RETURN changed;
END;
$$;

CREATE OR REPLACE FUNCTION algolia_sync_spill(max_keys integer) RETURNS integer
LANGUAGE plpgsql
SET lock_timeout = '200ms'
SET search_path FROM CURRENT AS $$
DECLARE
    r       record;
    tids    tid[];
    related tid[];
    total   bigint;
    n       integer;
    longest integer := algolia_sync_max_key_bytes();
BEGIN
    LOOP
        tids := '{}';
        related := '{}';
        total := 0;
        -- A FOR loop fetches (and locks) a few rows at a time, so a long inbox is not all locked at once.
        FOR r IN SELECT x.ctid AS tid, x.keys, x.operation FROM algolia_sync_inbox x ORDER BY x.created_at
                 FOR UPDATE SKIP LOCKED LOOP
            IF r.operation = 'RELATED' THEN
                related := related || r.tid;
            ELSE
                tids := tids || r.tid;
                total := total + r.keys;
            END IF;
            EXIT WHEN total >= max_keys;
        END LOOP;
        EXIT WHEN cardinality(related) = 0;
        -- Changes to related tables become the watched keys they point at (inbox rows of this
        -- transaction, which the next pass takes with the rest, still locked by this one).
        PERFORM algolia_sync_expand_related(x.table_name, x.fk_attnum, x.record_ids, x.created_at)
           FROM algolia_sync_inbox x WHERE x.ctid = ANY(related);
        DELETE FROM algolia_sync_inbox x WHERE x.ctid = ANY(related);
    END LOOP;
    IF cardinality(tids) = 0 THEN
        RETURN 0;
    END IF;
    WITH taken AS (
        -- Locked above, so these row versions are still the ones read.
        DELETE FROM algolia_sync_inbox i WHERE i.ctid = ANY(tids)
        RETURNING i.table_name, i.operation, i.record_ids, i.created_at
    ), keys AS (
        -- A key in several inbox rows: its latest operation, its earliest capture time. Sorted by
        -- key, so that concurrent spills lock pending rows in the same order.
        SELECT DISTINCT ON (t.table_name, k.record_id) t.table_name, k.record_id, t.operation,
               min(t.created_at) OVER (PARTITION BY t.table_name, k.record_id) AS created_at,
               octet_length(k.record_id) > longest AS too_long
          FROM taken t, unnest(t.record_ids) AS k(record_id)
         WHERE k.record_id IS NOT NULL
         ORDER BY t.table_name, k.record_id, t.created_at DESC
    ), refused AS (
        -- One failed row per over-long key: a hot key spilled again finds its row and adds none.
        INSERT INTO algolia_sync_queue (table_name, record_id, operation, status, created_at, last_error)
        SELECT k.table_name, left(k.record_id, 100) || '…',
               k.operation, 'failed', k.created_at,
               format('key is %s bytes long, over the %s-byte limit for an objectID: this row cannot be synced '
                      '(key starts %L, md5 %s)', octet_length(k.record_id), longest, left(k.record_id, 40), md5(k.record_id))
          FROM keys k
         WHERE k.too_long
           AND NOT EXISTS (SELECT 1 FROM algolia_sync_queue f
                            WHERE f.status = 'failed' AND f.table_name = k.table_name
                              AND f.record_id = left(k.record_id, 100) || '…'
                              AND f.last_error LIKE '%md5 ' || md5(k.record_id) || ')')
    )
    INSERT INTO algolia_sync_queue AS q (table_name, record_id, operation, created_at)
    SELECT k.table_name, k.record_id, k.operation, k.created_at FROM keys k WHERE NOT k.too_long
    ON CONFLICT (table_name, record_id) WHERE status = 'pending'
    -- A pending reindex stays one: its record must still be replaced whole.
    DO UPDATE SET operation = CASE WHEN q.operation = 'REINDEX' THEN 'REINDEX' ELSE EXCLUDED.operation END,
                  updated_at = now();
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
