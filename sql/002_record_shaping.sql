-- workerpool schema, version 2: record shaping.
-- Per-index attribute selection, Python transforms and index settings; related-table propagation;
-- a version for every record; and the hash of the last record sent, to skip unchanged ones.

ALTER TABLE algolia_index_config
    ADD COLUMN attributes text[],   -- columns that make up the record (NULL: all of them)
    ADD COLUMN transform  text,     -- 'module:function' applied to each record, or NULL
    ADD COLUMN settings   jsonb;    -- Algolia index settings kept as code (`workerpool settings push`)

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

-- Capture, now comparing only the columns an index uses (TG_ARGV[2], comma-separated; empty: the
-- whole row), so an update that touches nothing indexed enqueues nothing.
CREATE OR REPLACE FUNCTION algolia_sync_enqueue() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    key_col  text := TG_ARGV[0];
    tbl      text := TG_ARGV[1];
    cols     text := coalesce(TG_ARGV[2], '');
    new_cmp  text := 'n::text';
    old_cmp  text := 'o::text';
    n        bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format(
            'INSERT INTO algolia_sync_queue (table_name, record_id, operation)
             SELECT DISTINCT $1, (r.%1$I)::text, ''INSERT'' FROM new_rows r
             ON CONFLICT (table_name, record_id) WHERE status = ''pending''
             DO UPDATE SET operation = EXCLUDED.operation, updated_at = now()', key_col)
        USING tbl;
    ELSIF TG_OP = 'UPDATE' THEN
        IF cols <> '' THEN
            SELECT 'ROW(' || string_agg(format('n.%I', c), ', ') || ')::text',
                   'ROW(' || string_agg(format('o.%I', c), ', ') || ')::text'
              INTO new_cmp, old_cmp
              FROM unnest(string_to_array(cols, ',')) AS c;
        END IF;
        EXECUTE format(
            'INSERT INTO algolia_sync_queue (table_name, record_id, operation)
             SELECT DISTINCT $1, coalesce(n.%1$I, o.%1$I)::text,
                    CASE WHEN n.%1$I IS NULL THEN ''DELETE'' ELSE ''UPDATE'' END
             FROM new_rows n FULL JOIN old_rows o ON o.%1$I = n.%1$I
             WHERE n.%1$I IS NULL OR o.%1$I IS NULL OR %2$s IS DISTINCT FROM %3$s
             ON CONFLICT (table_name, record_id) WHERE status = ''pending''
             DO UPDATE SET operation = EXCLUDED.operation, updated_at = now()', key_col, new_cmp, old_cmp)
        USING tbl;
    ELSIF TG_OP = 'TRUNCATE' THEN
        -- A BEFORE TRUNCATE trigger still sees every row: each key becomes a delete.
        EXECUTE format(
            'INSERT INTO algolia_sync_queue (table_name, record_id, operation)
             SELECT DISTINCT $1, (r.%1$I)::text, ''DELETE'' FROM %2$s r
             ON CONFLICT (table_name, record_id) WHERE status = ''pending''
             DO UPDATE SET operation = EXCLUDED.operation, updated_at = now()', key_col, TG_RELID::regclass)
        USING tbl;
    ELSE
        EXECUTE format(
            'INSERT INTO algolia_sync_queue (table_name, record_id, operation)
             SELECT DISTINCT $1, (r.%1$I)::text, ''DELETE'' FROM old_rows r
             ON CONFLICT (table_name, record_id) WHERE status = ''pending''
             DO UPDATE SET operation = EXCLUDED.operation, updated_at = now()', key_col)
        USING tbl;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('algolia_sync', tbl);
    END IF;
    RETURN NULL;
END;
$$;

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
         SELECT DISTINCT $1, (t.%1$I)::text, ''UPDATE'' FROM %2$s t WHERE t.%3$I IN (%4$s)
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

-- Acknowledge, now also remembering what was sent (hashes) and forgetting deleted records.
-- The outcome goes through arrays, not one statement, so that no row is changed twice in a statement.
DROP FUNCTION algolia_sync_ack(bigint[], uuid, text[], text[]);
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
