-- workerpool schema, version 7: the schema as schema.sql defines it.
-- * The queue's status is 'pending', 'processing' or 'failed': no code writes 'completed' (an
--   acknowledged row is deleted and logged), so the constraint stops allowing it and
--   cleanup_old_sync_records stops looking for it.
-- * The NOTIFY channel and the capture function's name are each defined by one SQL function
--   (algolia_sync_channel, algolia_sync_capture_name), which the Python code and the other
--   functions use.

DELETE FROM algolia_sync_queue WHERE status = 'completed';
ALTER TABLE algolia_sync_queue
    DROP CONSTRAINT algolia_sync_queue_status_check,
    ADD CONSTRAINT algolia_sync_queue_status_check CHECK (status IN ('pending', 'processing', 'failed'));

CREATE OR REPLACE FUNCTION cleanup_old_sync_records(days integer DEFAULT 7) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    n integer;
BEGIN
    IF days IS NULL OR days < 0 THEN
        RAISE EXCEPTION 'cleanup_old_sync_records: days must be 0 or more, got %', days;
    END IF;
    DELETE FROM algolia_sync_log WHERE synced_at < now() - make_interval(days => days);
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM algolia_sync_workers WHERE heartbeat_at < now() - make_interval(days => days);
    RETURN n;
END;
$$;

-- The channel every capture NOTIFYs and every worker LISTENs on.
CREATE FUNCTION algolia_sync_channel() RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'algolia_sync' $$;

-- The name of a watched table's capture function, from its registration name.
CREATE FUNCTION algolia_sync_capture_name(table_name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'algolia_sync_capture_' || left(md5(table_name), 16) $$;

CREATE OR REPLACE FUNCTION algolia_sync_create_capture(fn_name text, tbl text, key_col text, cols text[], rel regclass)
RETURNS text
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $create$
DECLARE
    qualified  text := format('%I.%I', current_schema(), fn_name);
    new_cmp    text := 'ROW(n.*)::text';
    old_cmp    text := 'ROW(o.*)::text';
    pinned     text;
    nullable   boolean;
    has_key    text := '';
    src        text[];
    small      text[];
    block      text[];
BEGIN
    SELECT algolia_sync_key_settings(a.atttypid::regtype), NOT a.attnotnull INTO pinned, nullable
      FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = key_col AND NOT a.attisdropped;
    -- Only a nullable key needs the filter (the spill drops NULL keys anyway; this keeps them out of
    -- the inbox); a primary key pays nothing for it.
    IF nullable THEN
        has_key := format(' AND r.%I IS NOT NULL', key_col);
    END IF;
    IF cols IS NOT NULL AND cardinality(cols) > 0 THEN
        SELECT 'ROW(' || string_agg(format('n.%I', c), ', ') || ')::text',
               'ROW(' || string_agg(format('o.%I', c), ', ') || ')::text'
          INTO new_cmp, old_cmp
          FROM unnest(cols) AS c;
    END IF;
    -- INSERT, UPDATE, DELETE, TRUNCATE (BEFORE, while the rows are still there): (k, op) per
    -- change with a key. Every column reference is qualified by an alias of this code's own.
    src := ARRAY[
        format('SELECT (r.%I)::text AS k, ''INSERT''::text AS op FROM new_rows r WHERE true%s', key_col, has_key),
        format('SELECT coalesce(n.%1$I, o.%1$I)::text AS k, CASE WHEN n.%1$I IS NULL THEN ''DELETE'' ELSE ''UPDATE'' END AS op
                  FROM new_rows n FULL JOIN old_rows o ON o.%1$I = n.%1$I
                 WHERE (n.%1$I IS NULL OR o.%1$I IS NULL OR %2$s IS DISTINCT FROM %3$s)%4$s',
               key_col, new_cmp, old_cmp,
               CASE WHEN nullable THEN format(' AND coalesce(n.%1$I, o.%1$I) IS NOT NULL', key_col) ELSE '' END),
        format('SELECT (r.%I)::text AS k, ''DELETE''::text AS op FROM old_rows r WHERE true%s', key_col, has_key),
        -- Formatted again when it runs (FROM the table as it is then called): '%' in the key's
        -- name is doubled for that second pass.
        format('SELECT (r.%s)::text AS k, ''DELETE''::text AS op FROM %%s r WHERE true%s',
               replace(quote_ident(key_col), '%', '%%'), replace(has_key, '%', '%%'))];
    -- The small path: an ARRAY(subquery) where every change has one operation (cheaper than an
    -- aggregate for the single-row statements that matter most), two filtered aggregates for UPDATE.
    small := ARRAY[
        format('changed := ARRAY(SELECT s.k FROM (%s LIMIT 1001) s); changes := cardinality(changed);', src[1]),
        format('SELECT count(*), array_agg(s.k) FILTER (WHERE s.op = ''UPDATE''), array_agg(s.k) FILTER (WHERE s.op = ''DELETE'')
                  INTO changes, changed, gone FROM (%s LIMIT 1001) s;', src[2]),
        format('gone := ARRAY(SELECT s.k FROM (%s LIMIT 1001) s); changes := cardinality(gone);', src[3])];
    -- Each event's block: the small path, then the streaming one when the statement is bulk.
    FOR i IN 1..3 LOOP
        block[i] := format(
            '%s
        IF changes > 1000 THEN
            INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids)
            SELECT %L, c.op, count(*), array_agg(c.k)
              FROM (SELECT s.k, s.op, (row_number() OVER () - 1) / 1000 AS chunk FROM (%s) s) c
             GROUP BY c.op, c.chunk;
        END IF;', small[i], tbl, src[i]);
    END LOOP;
    block[4] := format(
        'EXECUTE format(%L, TG_RELID::regclass) INTO gone;
        changes := cardinality(gone);
        IF changes > 1000 THEN
            EXECUTE format(%L, TG_RELID::regclass) USING %L;
        END IF;',
        format('SELECT ARRAY(SELECT s.k FROM (%s LIMIT 1001) s)', src[4]),
        format('INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids)
                SELECT $1, ''DELETE'', count(*), array_agg(c.k)
                  FROM (SELECT s.k, (row_number() OVER () - 1) / 1000 AS chunk FROM (%s) s) c
                 GROUP BY c.chunk', src[4]),
        tbl);
    EXECUTE format($fn$
CREATE OR REPLACE FUNCTION %1$s() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT %7$s AS $body$
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
    PERFORM pg_notify(%8$L, %2$L);
    RETURN NULL;
END;
$body$
$fn$, qualified, tbl, block[1], block[2], block[3], block[4], coalesce(pinned, ''),
              algolia_sync_channel());
    RETURN qualified;
END;
$create$;


CREATE OR REPLACE FUNCTION algolia_sync_enqueue_related() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET DateStyle = 'ISO, YMD' SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' AS $$
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
    ELSIF TG_OP = 'TRUNCATE' THEN
        refs := format('SELECT r.%I FROM %s r', ref_col, TG_RELID::regclass);
    ELSE
        refs := format(
            'SELECT coalesce(n.%1$I, o.%1$I) FROM new_rows n FULL JOIN old_rows o ON o.%1$I = n.%1$I
              WHERE n.%1$I IS NULL OR o.%1$I IS NULL OR ROW(n.*)::text IS DISTINCT FROM ROW(o.*)::text', ref_col);
    END IF;
    EXECUTE format(
        'INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids)
         SELECT $1, ''UPDATE'', count(*), array_agg(c.k)
           FROM (SELECT (t.%1$I)::text AS k, (row_number() OVER () - 1) / 1000 AS chunk
                   FROM %2$s t WHERE t.%3$I IN (%4$s) AND t.%1$I IS NOT NULL) c
          GROUP BY c.chunk', key_col, tbl, fk_col, refs)
    USING tbl;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify(algolia_sync_channel(), tbl);
    END IF;
    RETURN NULL;
END;
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
        PERFORM pg_notify(algolia_sync_channel(), 'retry-failed');
    END IF;
    RETURN changed;
END;
$$;

