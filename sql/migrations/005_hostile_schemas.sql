-- workerpool schema, version 5: capture that no user schema can break, keys that do not depend on
-- the writing session, and an inbox that no single key can wedge.
--
-- * Generated trigger code compares whole rows as ROW(alias.*), never as a bare alias: a bare `n`
--   or `o` is also a column reference, ambiguous when the user's table has a column of that name.
-- * A key of a date/time type is turned into text under pinned settings (DateStyle ISO, TimeZone
--   UTC, IntervalStyle postgres), set on the generated function itself: the objectID depends on
--   the row alone. Other key types that `watch` accepts have one text form in every session, and
--   pay nothing for it.
-- * NULL keys (a nullable UNIQUE key column) are never captured: such a row has no objectID.
-- * A TRUNCATE of a related table re-enqueues the watched rows that pointed at it.
-- * The spill drops NULL keys left in an inbox by older capture code, and turns a key too long
--   for an objectID (or for the queue's btree indexes) into one failed queue row instead of
--   failing the whole spill, which runs before every claim.

-- The settings under which key text is canonical (see above). Returned as the SET clauses of a
-- CREATE FUNCTION, or '' when the key type's text form does not depend on them.
CREATE OR REPLACE FUNCTION algolia_sync_key_settings(key_type regtype) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN t.typcategory IN ('D', 'T')
                THEN 'SET DateStyle = ''ISO, YMD'' SET TimeZone = ''UTC'' SET IntervalStyle = ''postgres'''
                ELSE '' END
      FROM pg_type t
     WHERE t.oid = (SELECT CASE WHEN d.typtype = 'd' THEN d.typbasetype ELSE d.oid END
                      FROM pg_type d WHERE d.oid = key_type);
$$;

DROP FUNCTION IF EXISTS algolia_sync_create_capture(text, text, text, text[]);

-- The capture generator. `tbl` is the registration's name (what the inbox rows carry), `rel` the
-- table itself: the TRUNCATE path reads whatever the table is called when it runs (TG_RELID), so
-- renaming a watched table never breaks a TRUNCATE.
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
    PERFORM pg_notify('algolia_sync', %2$L);
    RETURN NULL;
END;
$body$
$fn$, qualified, tbl, block[1], block[2], block[3], block[4], coalesce(pinned, ''));
    RETURN qualified;
END;
$create$;

-- Propagation from a related table. The watched table's key is turned into text under the same
-- pinned settings as its own capture (always pinned here: one generic function serves every link).
-- A TRUNCATE (BEFORE, while the related rows are still there) re-enqueues every watched row that
-- points at any of them.
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
        PERFORM pg_notify('algolia_sync', tbl);
    END IF;
    RETURN NULL;
END;
$$;

-- The longest key text (in bytes) that becomes an objectID; a longer key fails alone (below).
-- It keeps every queue index entry far under btree's ~2,700-byte limit.
CREATE OR REPLACE FUNCTION algolia_sync_max_key_bytes() RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT 1000 $$;

-- Move inbox rows, oldest first, into the queue (see 004). Keys are checked on the way: a NULL key
-- is dropped, and a key longer than algolia_sync_max_key_bytes() becomes a failed row whose
-- record_id is the key's first bytes and whose last_error says why, so that no key can fail the
-- statement that every claim runs first.
CREATE OR REPLACE FUNCTION algolia_sync_spill(max_keys integer) RETURNS integer
LANGUAGE plpgsql
SET lock_timeout = '200ms'
SET search_path FROM CURRENT AS $$
DECLARE
    r      record;
    tids   tid[] := '{}';
    total  bigint := 0;
    n      integer;
    longest integer := algolia_sync_max_key_bytes();
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
               min(t.created_at) OVER (PARTITION BY t.table_name, k.record_id) AS created_at,
               octet_length(k.record_id) > longest AS too_long
          FROM taken t, unnest(t.record_ids) AS k(record_id)
         WHERE k.record_id IS NOT NULL
         ORDER BY t.table_name, k.record_id, t.created_at DESC
    ), refused AS (
        INSERT INTO algolia_sync_queue (table_name, record_id, operation, status, created_at, last_error)
        SELECT k.table_name, left(k.record_id, 100) || '…',
               k.operation, 'failed', k.created_at,
               format('key is %s bytes long, over the %s-byte limit for an objectID: this row cannot be synced '
                      '(key starts %L, md5 %s)', octet_length(k.record_id), longest, left(k.record_id, 40), md5(k.record_id))
          FROM keys k WHERE k.too_long
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

-- A registration follows its table through DDL. `relation` and `source` hold the table and the
-- source view as regclass (an oid that prints as the current, quoted name): the worker reads from
-- them, never from SQL text. `key_attnum` and `attribute_attnums` (a plain table's --attributes,
-- in their order) find those columns again after a rename. `disabled_reason` says why a registration stopped capturing.
ALTER TABLE algolia_index_config
    ADD COLUMN IF NOT EXISTS relation         regclass,
    ADD COLUMN IF NOT EXISTS source           regclass,
    ADD COLUMN IF NOT EXISTS key_attnum       smallint,
    ADD COLUMN IF NOT EXISTS attribute_attnums smallint[],
    ADD COLUMN IF NOT EXISTS disabled_reason  text;

UPDATE algolia_index_config c
   SET relation = to_regclass(c.table_name),
       source = to_regclass(c.source_view),
       key_attnum = (SELECT a.attnum FROM pg_attribute a
                      WHERE a.attrelid = to_regclass(c.table_name) AND a.attname = c.key_column AND NOT a.attisdropped),
       attribute_attnums = CASE WHEN c.attributes IS NOT NULL AND c.source_view IS NULL THEN
           ARRAY(SELECT a.attnum FROM unnest(c.attributes) WITH ORDINALITY AS x(name, i)
                   JOIN pg_attribute a ON a.attrelid = to_regclass(c.table_name) AND a.attname = x.name
                                      AND NOT a.attisdropped
                  ORDER BY x.i) END
 WHERE c.relation IS NULL;

-- algolia_index_config is code: transforms are imported and views are queried by the workers.
REVOKE ALL ON TABLE algolia_index_config, algolia_index_related FROM PUBLIC;

-- After an ALTER TABLE on a watched table (a rename of the table, its key or a compared column, a
-- change of the key's type): regenerate its capture function under the current names, so that the
-- application's next write does not fail. A dropped key column detaches the capture triggers and
-- disables the registration with a reason (`workerpool watch` again repairs it). Whatever goes
-- wrong in here is a WARNING, never an error: the user's DDL must not fail because of us.
CREATE OR REPLACE FUNCTION algolia_sync_follow_ddl() RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT AS $$
DECLARE
    c        record;
    new_key  text;
    attrs    text[];
    fn       text;
BEGIN
  BEGIN
    FOR c IN SELECT DISTINCT cfg.table_name, cfg.relation, cfg.key_attnum, cfg.attribute_attnums
               FROM algolia_index_config cfg
               JOIN pg_event_trigger_ddl_commands() d
                 ON d.classid = 'pg_class'::regclass AND d.objid = cfg.relation
              WHERE cfg.enabled AND cfg.key_attnum IS NOT NULL LOOP
        BEGIN
            SELECT p.proname INTO fn
              FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
             WHERE t.tgrelid = c.relation AND t.tgname = 'algolia_sync_insert';
            IF fn IS NULL THEN
                CONTINUE;
            END IF;
            SELECT a.attname INTO new_key FROM pg_attribute a
             WHERE a.attrelid = c.relation AND a.attnum = c.key_attnum AND NOT a.attisdropped;
            IF new_key IS NULL THEN
                PERFORM algolia_sync_detach(c.relation);
                UPDATE algolia_index_config
                   SET enabled = false, updated_at = now(),
                       disabled_reason = format('the key column of %s was dropped; capture stopped. '
                                                'Run `workerpool watch %s --key COLUMN` to watch it again', c.relation, c.relation)
                 WHERE table_name = c.table_name;
                RAISE WARNING 'workerpool: % lost its key column; it is no longer captured (run workerpool watch again)', c.relation;
                CONTINUE;
            END IF;
            attrs := ARRAY(SELECT a.attname FROM unnest(c.attribute_attnums) WITH ORDINALITY AS x(attnum, i)
                             JOIN pg_attribute a ON a.attrelid = c.relation AND a.attnum = x.attnum AND NOT a.attisdropped
                            ORDER BY x.i);
            PERFORM algolia_sync_create_capture(
                fn, c.table_name, new_key,
                CASE WHEN c.attribute_attnums IS NULL THEN '{}'::text[]
                     ELSE ARRAY(SELECT DISTINCT ON (x) x FROM unnest(new_key || attrs) AS x) END,
                c.relation);
            UPDATE algolia_index_config cfg
               SET key_column = new_key,
                   key_type = (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                                WHERE a.attrelid = c.relation AND a.attnum = c.key_attnum),
                   attributes = CASE WHEN c.attribute_attnums IS NOT NULL THEN attrs ELSE cfg.attributes END,
                   updated_at = now()
             WHERE cfg.table_name = c.table_name;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'workerpool: could not follow DDL on %: %', c.relation, SQLERRM;
        END;
    END LOOP;
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'workerpool: could not look for watched tables in this DDL: %', SQLERRM;
  END;
END;
$$;


-- Attach a watched table's capture function: statement-level triggers on the table and on each of
-- its partitions (statement triggers fire only on the table a statement names, so writes made
-- directly into a partition need their own). CREATE OR REPLACE: safe to repeat.
CREATE OR REPLACE FUNCTION algolia_sync_attach(rel regclass, fn text) RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT t.relid FROM pg_partition_tree(rel) t UNION SELECT rel LOOP
        EXECUTE format('CREATE OR REPLACE TRIGGER algolia_sync_insert AFTER INSERT ON %1$s
                            REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION %2$s();
                        CREATE OR REPLACE TRIGGER algolia_sync_update AFTER UPDATE ON %1$s
                            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION %2$s();
                        CREATE OR REPLACE TRIGGER algolia_sync_delete AFTER DELETE ON %1$s
                            REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION %2$s();
                        CREATE OR REPLACE TRIGGER algolia_sync_truncate BEFORE TRUNCATE ON %1$s
                            FOR EACH STATEMENT EXECUTE FUNCTION %2$s()', part, fn);
    END LOOP;
END;
$$;

-- Detach it: the table's and its partitions' capture triggers.
CREATE OR REPLACE FUNCTION algolia_sync_detach(rel regclass) RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT t.relid FROM pg_partition_tree(rel) t UNION SELECT rel LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS algolia_sync_insert ON %1$s;
                        DROP TRIGGER IF EXISTS algolia_sync_update ON %1$s;
                        DROP TRIGGER IF EXISTS algolia_sync_delete ON %1$s;
                        DROP TRIGGER IF EXISTS algolia_sync_truncate ON %1$s', part);
    END LOOP;
END;
$$;

-- A partition created or attached under a watched table gets its capture triggers at once.
CREATE OR REPLACE FUNCTION algolia_sync_follow_partitions() RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT AS $$
DECLARE
    c record;
BEGIN
  BEGIN
    FOR c IN SELECT DISTINCT cfg.relation, p.oid::regproc::text AS fn
               FROM pg_event_trigger_ddl_commands() d
               JOIN algolia_index_config cfg ON cfg.enabled
                AND (d.objid = cfg.relation OR d.objid IN (SELECT t.relid FROM pg_partition_tree(cfg.relation) t))
               JOIN pg_trigger tg ON tg.tgrelid = cfg.relation AND tg.tgname = 'algolia_sync_insert'
               JOIN pg_proc p ON p.oid = tg.tgfoid
              WHERE d.classid = 'pg_class'::regclass
                AND (SELECT relkind FROM pg_class WHERE oid = cfg.relation) = 'p' LOOP
        BEGIN
            PERFORM algolia_sync_attach(c.relation, c.fn);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'workerpool: could not attach capture to the partitions of %: %', c.relation, SQLERRM;
        END;
    END LOOP;
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'workerpool: could not look for partitions of watched tables: %', SQLERRM;
  END;
END;
$$;

-- Event triggers need a superuser. Without one, `migrate` says so and DDL on a watched table may
-- break its capture until `workerpool watch` is run again (README: Supported tables and types).
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        DROP EVENT TRIGGER IF EXISTS algolia_sync_follow_ddl;
        CREATE EVENT TRIGGER algolia_sync_follow_ddl ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION algolia_sync_follow_ddl();
        DROP EVENT TRIGGER IF EXISTS algolia_sync_follow_partitions;
        CREATE EVENT TRIGGER algolia_sync_follow_partitions ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE') EXECUTE FUNCTION algolia_sync_follow_partitions();
    ELSE
        RAISE NOTICE 'workerpool: not a superuser, so DDL on watched tables is not followed automatically';
    END IF;
END;
$$;
