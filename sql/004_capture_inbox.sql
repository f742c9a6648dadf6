-- workerpool schema, version 4: a bulk statement's capture costs its writer little.
-- Capturing 100,000 inserted rows straight into the queue (a heap row, three btree entries and an
-- ON CONFLICT speculative insertion per key) made the writer's INSERT 4.2-4.9x slower than on an
-- unwatched table. A statement that changes more than 100 rows now writes its keys into an inbox
-- instead: one unindexed row per 1,000 keys, about 1.4x. Workers move inbox keys into the queue
-- (`algolia_sync_spill`, before they claim), where they coalesce with pending rows exactly as a direct
-- capture does; so the same work is done, but by the workers, not inside the writer's transaction.
-- Smaller statements (the single-row writes of an application) still enqueue directly, so their rows
-- are in the queue the moment they commit.

CREATE TABLE IF NOT EXISTS algolia_sync_inbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name  text NOT NULL,
    operation   text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    record_ids  text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

-- The capture generator (see 001): each event's change set, as a (k, op) query, goes either to the
-- queue (ON CONFLICT coalescing) or, past BULK_ROWS rows in the statement, to the inbox in chunks.
CREATE OR REPLACE FUNCTION algolia_sync_create_capture(fn_name text, tbl text, key_col text, cols text[])
RETURNS text
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $create$
DECLARE
    qualified  text := format('%I.%I', current_schema(), fn_name);
    new_cmp    text := 'n::text';
    old_cmp    text := 'o::text';
    bulk_rows  constant integer := 100;   -- statements over this many rows go to the inbox
    chunk      constant integer := 1000;  -- keys per inbox row
    src        text[];
    rows_of    text[];
    direct     text[];
    inbox      text[];
BEGIN
    IF cols IS NOT NULL AND cardinality(cols) > 0 THEN
        SELECT 'ROW(' || string_agg(format('n.%I', c), ', ') || ')::text',
               'ROW(' || string_agg(format('o.%I', c), ', ') || ')::text'
          INTO new_cmp, old_cmp
          FROM unnest(cols) AS c;
    END IF;
    -- INSERT, UPDATE, DELETE, TRUNCATE: the changed keys, and the rows the statement touched.
    src := ARRAY[
        format('SELECT (r.%I)::text AS k, ''INSERT''::text AS op FROM new_rows r', key_col),
        format('SELECT coalesce(n.%1$I, o.%1$I)::text AS k, CASE WHEN n.%1$I IS NULL THEN ''DELETE'' ELSE ''UPDATE'' END AS op
                  FROM new_rows n FULL JOIN old_rows o ON o.%1$I = n.%1$I
                 WHERE n.%1$I IS NULL OR o.%1$I IS NULL OR %2$s IS DISTINCT FROM %3$s', key_col, new_cmp, old_cmp),
        format('SELECT (r.%I)::text AS k, ''DELETE''::text AS op FROM old_rows r', key_col),
        format('SELECT (r.%I)::text AS k, ''DELETE''::text AS op FROM %s r', key_col, tbl::regclass)];
    rows_of := ARRAY['new_rows', 'new_rows', 'old_rows', tbl::regclass::text];
    FOR i IN 1..4 LOOP
        direct[i] := format(
            'INSERT INTO algolia_sync_queue (table_name, record_id, operation)
             SELECT %L, c.k, c.op FROM (%s) c
             ON CONFLICT (table_name, record_id) WHERE status = ''pending''
             DO UPDATE SET operation = EXCLUDED.operation, updated_at = now();', tbl, src[i]);
        inbox[i] := format(
            'IF (SELECT count(*) FROM (SELECT FROM %1$s LIMIT %2$s) s) > %3$s THEN
                INSERT INTO algolia_sync_inbox (table_name, operation, record_ids)
                SELECT %4$L, c.op, array_agg(c.k)
                  FROM (SELECT s.k, s.op, (row_number() OVER () - 1) / %5$s AS chunk FROM (%6$s) s) c
                 GROUP BY c.op, c.chunk;
             ELSE
                %7$s
             END IF;', rows_of[i], bulk_rows + 1, bulk_rows, tbl, chunk, src[i], direct[i]);
    END LOOP;
    EXECUTE format($fn$
CREATE OR REPLACE FUNCTION %1$s() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $body$
DECLARE
    enqueued bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        %3$s
    ELSIF TG_OP = 'UPDATE' THEN
        %4$s
    ELSIF TG_OP = 'TRUNCATE' THEN
        %6$s
    ELSE
        %5$s
    END IF;
    GET DIAGNOSTICS enqueued = ROW_COUNT;
    IF enqueued > 0 THEN
        PERFORM pg_notify('algolia_sync', %2$L);
    END IF;
    RETURN NULL;
END;
$body$
$fn$, qualified, tbl, inbox[1], inbox[2], inbox[3], inbox[4]);
    RETURN qualified;
END;
$create$;

-- Move up to max_keys inbox keys (whole inbox rows, oldest first, at least one) into the queue,
-- coalescing with pending rows; returns how many queue rows were inserted or merged. Workers call
-- it before they claim. A lock wait (a writer's uncommitted pending row of the same key) gives up
-- quickly instead of queueing behind, or deadlocking with, the writer: the inbox rows stay for later.
CREATE OR REPLACE FUNCTION algolia_sync_spill(max_keys integer) RETURNS integer
LANGUAGE plpgsql
SET lock_timeout = '200ms'
SET search_path FROM CURRENT AS $$
DECLARE
    n integer;
BEGIN
    WITH taken AS (
        DELETE FROM algolia_sync_inbox i
         WHERE i.id = ANY(ARRAY(SELECT x.id FROM algolia_sync_inbox x ORDER BY x.id
                                 LIMIT greatest(1, max_keys / 1000) FOR UPDATE SKIP LOCKED))
        RETURNING i.id, i.table_name, i.operation, i.record_ids, i.created_at
    ), keys AS (
        -- A key in several inbox rows: its latest operation, its earliest capture time. Sorted by
        -- key, so that concurrent spills lock pending rows in the same order.
        SELECT DISTINCT ON (t.table_name, k.record_id) t.table_name, k.record_id, t.operation,
               min(t.created_at) OVER (PARTITION BY t.table_name, k.record_id) AS created_at
          FROM taken t, unnest(t.record_ids) AS k(record_id)
         ORDER BY t.table_name, k.record_id, t.id DESC
    )
    INSERT INTO algolia_sync_queue (table_name, record_id, operation, created_at)
    SELECT table_name, record_id, operation, created_at FROM keys
    ON CONFLICT (table_name, record_id) WHERE status = 'pending'
    DO UPDATE SET operation = EXCLUDED.operation, updated_at = now();
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- Nothing left to do: no key pending or being processed, in the queue or in the inbox
-- (`run --drain` and the demo stop on it).
CREATE OR REPLACE FUNCTION algolia_sync_idle() RETURNS boolean
LANGUAGE sql STABLE
SET search_path FROM CURRENT AS $$
    SELECT NOT EXISTS (SELECT 1 FROM algolia_sync_queue WHERE status IN ('pending', 'processing'))
       AND NOT EXISTS (SELECT 1 FROM algolia_sync_inbox);
$$;

-- The seed's status view: keys waiting in the inbox count as pending.
CREATE OR REPLACE VIEW algolia_sync_stats AS
SELECT c.table_name,
       c.index_name,
       count(q.id) FILTER (WHERE q.status = 'pending') + coalesce(i.keys, 0) AS pending,
       count(q.id) FILTER (WHERE q.status = 'processing') AS processing,
       count(q.id) FILTER (WHERE q.status = 'failed')     AS failed,
       (SELECT count(*) FROM algolia_sync_log l
         WHERE l.table_name = c.table_name AND l.status = 'success'
           AND l.synced_at > now() - interval '1 hour')   AS completed_last_hour,
       least(min(q.created_at) FILTER (WHERE q.status = 'pending'), i.oldest) AS oldest_pending_at,
       extract(epoch FROM now() - least(min(q.created_at) FILTER (WHERE q.status = 'pending'), i.oldest))::double precision
                                                          AS oldest_pending_age_s
  FROM algolia_index_config c
  LEFT JOIN algolia_sync_queue q ON q.table_name = c.table_name
  LEFT JOIN LATERAL (SELECT sum(cardinality(x.record_ids)) AS keys, min(x.created_at) AS oldest
                       FROM algolia_sync_inbox x WHERE x.table_name = c.table_name) i ON true
 GROUP BY c.table_name, c.index_name, i.keys, i.oldest;

-- Regenerate the capture function of every watched table that still exists (same name and compared
-- columns as `watch` gives it), so that upgraded installs capture bulk statements into the inbox.
SELECT algolia_sync_create_capture(
           'algolia_sync_capture_' || left(md5(c.table_name), 16), c.table_name, c.key_column,
           CASE WHEN c.attributes IS NOT NULL AND c.source_view IS NULL
                THEN ARRAY(SELECT DISTINCT a FROM unnest(c.key_column || c.attributes) AS a) ELSE '{}' END)
  FROM algolia_index_config c
 WHERE to_regclass(c.table_name) IS NOT NULL
   AND to_regproc('algolia_sync_capture_' || left(md5(c.table_name), 16)) IS NOT NULL;
