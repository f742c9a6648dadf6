-- workerpool schema, version 4: capture costs the writer little; the workers do the queue's work.
-- Capturing straight into the queue put a heap row, three btree entries and an ON CONFLICT check per
-- key inside the writer's transaction: a 100,000-row INSERT ran 4.2-4.9x slower than on an unwatched
-- table, a single-row INSERT ~1.45x. The triggers now write each statement's keys into an inbox (one
-- row per statement and operation, 1,000 keys at most per row, no index) and NOTIFY; workers
-- move inbox keys into the queue before they claim (`algolia_sync_spill`), where they coalesce with
-- pending rows exactly as the direct capture did. The work is the same, done by the workers instead
-- of inside the writer's transaction; per-key serialization, leases and acks are unchanged.

-- No index at all: with an identity primary key a single-row capture measured 10-20 us more backend
-- CPU (of 40-60). The table stays small (workers empty it continuously), so a spill sorts it by
-- capture time instead.
CREATE TABLE IF NOT EXISTS algolia_sync_inbox (
    table_name  text NOT NULL,
    operation   text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    keys        integer NOT NULL,   -- cardinality(record_ids), readable without detoasting the array
    record_ids  text[] NOT NULL,
    -- clock_timestamp(), not now(): two statements of one transaction keep their order.
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

-- The capture generator (see 001), now writing into the inbox. Each event's changed keys (an UPDATE
-- that changes none of the compared columns changes nothing; one that changes a key deletes the old
-- one) become inbox rows of at most 1,000 keys per operation, then one NOTIFY. Two paths, because a
-- single-row write must stay cheap and a bulk one must stream: the first 1,001 changes are gathered
-- into arrays (one row per operation when that is all of them: the common, small statement); past
-- 1,000, one INSERT … SELECT streams the statement's changes into 1,000-key rows instead, so a
-- statement of any size stays within memory and under the 1 GB limit of a single array.
CREATE OR REPLACE FUNCTION algolia_sync_create_capture(fn_name text, tbl text, key_col text, cols text[])
RETURNS text
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $create$
DECLARE
    qualified  text := format('%I.%I', current_schema(), fn_name);
    new_cmp    text := 'n::text';
    old_cmp    text := 'o::text';
    src        text[];
    small      text[];
    block      text[];
BEGIN
    IF cols IS NOT NULL AND cardinality(cols) > 0 THEN
        SELECT 'ROW(' || string_agg(format('n.%I', c), ', ') || ')::text',
               'ROW(' || string_agg(format('o.%I', c), ', ') || ')::text'
          INTO new_cmp, old_cmp
          FROM unnest(cols) AS c;
    END IF;
    -- INSERT, UPDATE, DELETE, TRUNCATE (BEFORE, while the rows are still there): (k, op) per change.
    src := ARRAY[
        format('SELECT (r.%I)::text AS k, ''INSERT''::text AS op FROM new_rows r', key_col),
        format('SELECT coalesce(n.%1$I, o.%1$I)::text AS k, CASE WHEN n.%1$I IS NULL THEN ''DELETE'' ELSE ''UPDATE'' END AS op
                  FROM new_rows n FULL JOIN old_rows o ON o.%1$I = n.%1$I
                 WHERE n.%1$I IS NULL OR o.%1$I IS NULL OR %2$s IS DISTINCT FROM %3$s', key_col, new_cmp, old_cmp),
        format('SELECT (r.%I)::text AS k, ''DELETE''::text AS op FROM old_rows r', key_col),
        format('SELECT (r.%I)::text AS k, ''DELETE''::text AS op FROM %s r', key_col, tbl::regclass)];
    -- The small path: an ARRAY(subquery) where every change has one operation (cheaper than an
    -- aggregate for the single-row statements that matter most), two filtered aggregates for UPDATE.
    small := ARRAY[
        format('changed := ARRAY(SELECT s.k FROM (%s LIMIT 1001) s); changes := cardinality(changed);', src[1]),
        format('SELECT count(*), array_agg(s.k) FILTER (WHERE s.op = ''UPDATE''), array_agg(s.k) FILTER (WHERE s.op = ''DELETE'')
                  INTO changes, changed, gone FROM (%s LIMIT 1001) s;', src[2]),
        format('gone := ARRAY(SELECT s.k FROM (%s LIMIT 1001) s); changes := cardinality(gone);', src[3]),
        format('gone := ARRAY(SELECT s.k FROM (%s LIMIT 1001) s); changes := cardinality(gone);', src[4])];
    -- Each event's block: the small path, then the streaming one when the statement is bulk.
    FOR i IN 1..4 LOOP
        block[i] := format(
            '%s
        IF changes > 1000 THEN
            INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids)
            SELECT %L, c.op, count(*), array_agg(c.k)
              FROM (SELECT s.k, s.op, (row_number() OVER () - 1) / 1000 AS chunk FROM (%s) s) c
             GROUP BY c.op, c.chunk;
        END IF;', small[i], tbl, src[i]);
    END LOOP;
    EXECUTE format($fn$
CREATE OR REPLACE FUNCTION %1$s() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $body$
DECLARE
    changes bigint;
    changed text[];
    gone    text[];
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
    IF changes = 0 THEN
        RETURN NULL;
    ELSIF changes <= 1000 THEN
        IF cardinality(changed) > 0 THEN
            INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids)
            VALUES (%2$L, CASE TG_OP WHEN 'INSERT' THEN 'INSERT' ELSE 'UPDATE' END, cardinality(changed), changed);
        END IF;
        IF cardinality(gone) > 0 THEN
            INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids)
            VALUES (%2$L, 'DELETE', cardinality(gone), gone);
        END IF;
    END IF;
    PERFORM pg_notify('algolia_sync', %2$L);
    RETURN NULL;
END;
$body$
$fn$, qualified, tbl, block[1], block[2], block[3], block[4]);
    RETURN qualified;
END;
$create$;

-- Propagation from a related table (see 001), into the inbox too: renaming a brand with 50,000
-- products writes 50 inbox rows inside the writer's transaction instead of 50,000 queue rows.
CREATE OR REPLACE FUNCTION algolia_sync_enqueue_related() RETURNS trigger
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
        'INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids)
         SELECT $1, ''UPDATE'', count(*), array_agg(c.k)
           FROM (SELECT (t.%1$I)::text AS k, (row_number() OVER () - 1) / 1000 AS chunk
                   FROM %2$s t WHERE t.%3$I IN (%4$s)) c
          GROUP BY c.chunk', key_col, tbl, fk_col, refs)
    USING tbl;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('algolia_sync', tbl);
    END IF;
    RETURN NULL;
END;
$$;

-- Move inbox rows, oldest first, into the queue: whole rows until max_keys keys (at least one
-- row), coalescing with pending rows; returns how many queue rows that inserted or merged. Workers
-- call it before they claim. A lock wait (another transaction's uncommitted pending row of the same
-- key: a `reindex` chunk, a `retry-failed`) gives up after lock_timeout instead of queueing behind,
-- or deadlocking with, that transaction: the inbox rows stay for the next call.
CREATE OR REPLACE FUNCTION algolia_sync_spill(max_keys integer) RETURNS integer
LANGUAGE plpgsql
SET lock_timeout = '200ms'
SET search_path FROM CURRENT AS $$
DECLARE
    r      record;
    tids   tid[] := '{}';
    total  bigint := 0;
    n      integer;
BEGIN
    -- A FOR loop fetches (and locks) a few rows at a time, so a long inbox is not all locked at once.
    FOR r IN SELECT x.ctid AS tid, x.keys FROM algolia_sync_inbox x ORDER BY x.created_at
             FOR UPDATE SKIP LOCKED LOOP
        tids := tids || r.tid;
        total := total + r.keys;
        EXIT WHEN total >= max_keys;
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
               min(t.created_at) OVER (PARTITION BY t.table_name, k.record_id) AS created_at
          FROM taken t, unnest(t.record_ids) AS k(record_id)
         ORDER BY t.table_name, k.record_id, t.created_at DESC
    )
    INSERT INTO algolia_sync_queue AS q (table_name, record_id, operation, created_at)
    SELECT table_name, record_id, operation, created_at FROM keys
    ON CONFLICT (table_name, record_id) WHERE status = 'pending'
    -- A pending reindex stays one: its record must still be replaced whole.
    DO UPDATE SET operation = CASE WHEN q.operation = 'REINDEX' THEN 'REINDEX' ELSE EXCLUDED.operation END,
                  updated_at = now();
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
  LEFT JOIN LATERAL (SELECT sum(x.keys) AS keys, min(x.created_at) AS oldest
                       FROM algolia_sync_inbox x WHERE x.table_name = c.table_name) i ON true
 GROUP BY c.table_name, c.index_name, i.keys, i.oldest;

-- Regenerate the capture function of every watched table that still exists (same name and compared
-- columns as `watch` gives it), so that upgraded installs capture into the inbox.
SELECT algolia_sync_create_capture(
           'algolia_sync_capture_' || left(md5(c.table_name), 16), c.table_name, c.key_column,
           CASE WHEN c.attributes IS NOT NULL AND c.source_view IS NULL
                THEN ARRAY(SELECT DISTINCT a FROM unnest(c.key_column || c.attributes) AS a) ELSE '{}' END)
  FROM algolia_index_config c
 WHERE to_regclass(c.table_name) IS NOT NULL
   AND to_regproc('algolia_sync_capture_' || left(md5(c.table_name), 16)) IS NOT NULL;
