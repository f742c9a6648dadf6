-- workerpool schema, version 13: least privilege (docs/roles.md).
--
-- * Every function that sets a search_path gets pg_catalog first, workerpool's own schema, pg_temp
--   last (algolia_sync_pin_search_paths): a temporary object can no longer shadow a name that the
--   DDL followers (SECURITY DEFINER) or a capture resolve. `migrate` refuses a schema in which an
--   untrusted role may create objects.
-- * Generated capture code is a quoted literal, not dollar-quoted, so no identifier can end it; an
--   enum key is turned into text by its output function, never by a cast its owner may add.
-- * A change to a related table puts the referenced values in the inbox (a RELATED row) and the
--   spill, run by the pool, finds the watched rows: the roles that write a related table need no
--   right on the watched one. Related triggers find their columns by attnum and the watched table
--   through its registration, so renames change nothing; they are attached again here.
-- * Every role that can write a watched table may add keys to the inbox (capture runs as that role).
-- * Worker roles: algolia_sync_worker_roles and algolia_sync_grant_worker.

-- The schema workerpool is installed in: where its inbox is (every workerpool function's search_path
-- names it).
CREATE FUNCTION algolia_sync_schema() RETURNS name
LANGUAGE sql STABLE
SET search_path FROM CURRENT AS $$
    SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = 'algolia_sync_inbox'::regclass
$$;

CREATE OR REPLACE FUNCTION algolia_sync_capture_name(table_name text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path FROM CURRENT AS $$ SELECT 'algolia_sync_capture_' || left(md5(table_name), 16) $$;

CREATE OR REPLACE FUNCTION algolia_sync_create_capture(fn_name text, tbl text, key_col text, cols text[], rel regclass)
RETURNS text
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $create$
DECLARE
    qualified  text := format('%I.%I', algolia_sync_schema(), fn_name);
    new_cmp    text := 'ROW(n.*)::pg_catalog.text';
    old_cmp    text := 'ROW(o.*)::pg_catalog.text';
    pinned     text;
    nullable   boolean;
    as_text    text;
    has_key    text := '';
    src        text[];
    small      text[];
    block      text[];
BEGIN
    SELECT algolia_sync_key_settings(a.atttypid::regtype), NOT a.attnotnull,
           -- A built-in key type is cast to text (no role can add a cast from it); any other (an
           -- enum) goes through its output function, as a cast its owner adds cannot.
           CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN '(%s)::pg_catalog.text'
                ELSE 'pg_catalog.format(''%%s'', %s)' END
      INTO pinned, nullable, as_text
      FROM pg_attribute a
      JOIN pg_type d ON d.oid = a.atttypid
      JOIN pg_type t ON t.oid = CASE WHEN d.typtype = 'd' THEN d.typbasetype ELSE d.oid END
     WHERE a.attrelid = rel AND a.attname = key_col AND NOT a.attisdropped;
    -- Only a nullable key needs the filter (the spill drops NULL keys anyway; this keeps them out of
    -- the inbox); a primary key pays nothing for it.
    IF nullable THEN
        has_key := format(' AND r.%I IS NOT NULL', key_col);
    END IF;
    IF cols IS NOT NULL AND cardinality(cols) > 0 THEN
        SELECT 'ROW(' || string_agg(format('n.%I', c), ', ') || ')::pg_catalog.text',
               'ROW(' || string_agg(format('o.%I', c), ', ') || ')::pg_catalog.text'
          INTO new_cmp, old_cmp
          FROM unnest(cols) AS c;
    END IF;
    -- INSERT, UPDATE, DELETE, TRUNCATE (BEFORE, while the rows are still there): (k, op) per
    -- change with a key. Every column reference is qualified by an alias of this code's own.
    src := ARRAY[
        format('SELECT %s AS k, ''INSERT''::text AS op FROM new_rows r WHERE true%s',
               format(as_text, format('r.%I', key_col)), has_key),
        format('SELECT %5$s AS k, CASE WHEN n.%1$I IS NULL THEN ''DELETE'' ELSE ''UPDATE'' END AS op
                  FROM new_rows n FULL JOIN old_rows o ON o.%1$I = n.%1$I
                 WHERE (n.%1$I IS NULL OR o.%1$I IS NULL OR %2$s IS DISTINCT FROM %3$s)%4$s',
               key_col, new_cmp, old_cmp,
               CASE WHEN nullable THEN format(' AND coalesce(n.%1$I, o.%1$I) IS NOT NULL', key_col) ELSE '' END,
               format(as_text, format('coalesce(n.%1$I, o.%1$I)', key_col))),
        format('SELECT %s AS k, ''DELETE''::text AS op FROM old_rows r WHERE true%s',
               format(as_text, format('r.%I', key_col)), has_key),
        -- Formatted again when it runs (FROM the table as it is then called): '%' in this text is
        -- doubled for that second pass.
        format('SELECT %s AS k, ''DELETE''::text AS op FROM %%s r WHERE true%s',
               replace(format(as_text, format('r.%I', key_col)), '%', '%%'), replace(has_key, '%', '%%'))];
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
    -- The body is a quoted literal (%L), not dollar-quoted: no identifier can end it early.
    EXECUTE format($fn$
CREATE OR REPLACE FUNCTION %1$s() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT %3$s AS %2$L$fn$, qualified, format($body$
DECLARE
    changes bigint;
    changed text[];
    gone    text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        %2$s
    ELSIF TG_OP = 'UPDATE' THEN
        %3$s
    ELSIF TG_OP = 'TRUNCATE' THEN
        %5$s
    ELSE
        %4$s
    END IF;
    IF changes = 0 THEN
        RETURN NULL;
    ELSIF changes <= 1000 THEN
        IF cardinality(changed) > 0 THEN
            INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids)
            VALUES (%1$L, CASE TG_OP WHEN 'INSERT' THEN 'INSERT' ELSE 'UPDATE' END, cardinality(changed), changed);
        END IF;
        IF cardinality(gone) > 0 THEN
            INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids)
            VALUES (%1$L, 'DELETE', cardinality(gone), gone);
        END IF;
    END IF;
    PERFORM pg_notify(%6$L, %1$L);
    RETURN NULL;
END;
$body$, tbl, block[1], block[2], block[3], block[4], algolia_sync_channel()), coalesce(pinned, ''));
    RETURN qualified;
END;
$create$;

ALTER TABLE algolia_sync_inbox
    DROP CONSTRAINT algolia_sync_inbox_operation_check,
    ADD CONSTRAINT algolia_sync_inbox_operation_check CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE', 'RELATED')),
    ADD COLUMN fk_attnum smallint;

ALTER TABLE algolia_index_related ADD COLUMN relation regclass, ADD COLUMN fk_attnum smallint,
                                  ADD COLUMN ref_attnum smallint;
UPDATE algolia_index_related r
   SET relation = to_regclass(r.related_table),
       fk_attnum = (SELECT a.attnum FROM algolia_index_config c
                      JOIN pg_attribute a ON a.attrelid = c.relation AND a.attname = r.fk_column AND NOT a.attisdropped
                     WHERE c.table_name = r.table_name),
       ref_attnum = (SELECT a.attnum FROM pg_attribute a
                      WHERE a.attrelid = to_regclass(r.related_table) AND a.attname = r.ref_column AND NOT a.attisdropped);

CREATE OR REPLACE FUNCTION algolia_sync_enqueue_related() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET DateStyle = 'ISO, YMD' SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' AS $$
DECLARE
    tbl     text := TG_ARGV[0];
    ref_col text;
    refs    text;
    n       bigint;
BEGIN
    SELECT a.attname INTO ref_col FROM pg_attribute a
     WHERE a.attrelid = TG_RELID AND a.attnum = TG_ARGV[2]::smallint AND NOT a.attisdropped;
    IF ref_col IS NULL THEN
        RETURN NULL;  -- the referenced column was dropped: nothing can point at it any more
    END IF;
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
    -- The values through their output function (format), never through a cast that the column
    -- type's owner could have added.
    EXECUTE format(
        'INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids, fk_attnum)
         SELECT $1, ''RELATED'', count(*), array_agg(c.v), $2
           FROM (SELECT d.v, (row_number() OVER () - 1) / 1000 AS chunk
                   FROM (SELECT DISTINCT pg_catalog.format(''%%s'', x.v) AS v FROM (%s) AS x(v) WHERE x.v IS NOT NULL) d) c
          GROUP BY c.chunk', refs)
    USING tbl, TG_ARGV[1]::smallint;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify(algolia_sync_channel(), tbl);
    END IF;
    RETURN NULL;
END;
$$;

-- The watched rows that point at changed rows of a related table, as they are now: their keys become
-- inbox rows of their own, with the change's capture time (the spill moves them on its next pass).
-- `refs` are the referenced values' text, `fk` the watched table's foreign-key column. Runs as the
-- pool's role, which reads the watched table anyway, so the roles that write a related table need
-- no right on the watched one. A link whose table or column is gone points at nothing; a read that
-- fails becomes one failed queue row that says why, never a failed spill.
CREATE OR REPLACE FUNCTION algolia_sync_expand_related(tbl text, fk smallint, refs text[], captured timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET DateStyle = 'ISO, YMD' SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' AS $$
DECLARE
    rel      regclass;
    key_col  text;
    fk_col   text;
    fk_match text;
BEGIN
    SELECT c.relation, k.attname, f.attname,
           -- A built-in type: the values are cast to it, the domain's base type (a domain's CHECK
           -- is its owner's code). Any other (an enum): compared as text, as a cast its owner may
           -- have added is not run.
           CASE WHEN b.typnamespace = 'pg_catalog'::regnamespace
                THEN format('t.%I = ANY($2::%s[])', f.attname, format_type(b.oid, NULL))
                ELSE format('pg_catalog.format(''%%s'', t.%I) = ANY($2)', f.attname) END
      INTO rel, key_col, fk_col, fk_match
      FROM algolia_index_config c
      JOIN pg_attribute k ON k.attrelid = c.relation AND k.attnum = c.key_attnum AND NOT k.attisdropped
      JOIN pg_attribute f ON f.attrelid = c.relation AND f.attnum = fk AND NOT f.attisdropped
      JOIN pg_type t ON t.oid = f.atttypid
      JOIN pg_type b ON b.oid = coalesce(nullif(t.typbasetype, 0), t.oid)
     WHERE c.table_name = tbl AND c.enabled;
    IF rel IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format(
        'INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids, created_at)
         SELECT $1, ''UPDATE'', count(*), array_agg(c.k), $3
           FROM (SELECT pg_catalog.format(''%%s'', t.%1$I) AS k, (row_number() OVER () - 1) / 1000 AS chunk
                   FROM %2$s t WHERE %3$s AND t.%1$I IS NOT NULL) c
          GROUP BY c.chunk', key_col, rel, fk_match)
    USING tbl, refs, captured;
EXCEPTION WHEN OTHERS THEN
    INSERT INTO algolia_sync_queue (table_name, record_id, operation, status, created_at, last_error)
    VALUES (tbl, left(format('(rows of %s pointing at %s)', fk_col, refs[1]), 100), 'UPDATE', 'failed', captured,
            format('could not find the rows of %s whose %s points at a changed related row (%s): %s; '
                   'run `workerpool verify %s --repair`', rel, fk_col, array_to_string(refs[1:5], ', '), SQLERRM, rel));
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

-- The related triggers, attached again with the new arguments (their names as capture/triggers.py
-- makes them: md5 of the registration's name, a NUL byte and the foreign-key column).
DO $$
DECLARE
    l   record;
    tag text;
BEGIN
    FOR l IN SELECT r.* FROM algolia_index_related r
              WHERE r.relation IS NOT NULL AND r.fk_attnum IS NOT NULL AND r.ref_attnum IS NOT NULL LOOP
        tag := 'algolia_rel_' || left(md5(convert_to(l.table_name, 'UTF8') || '\x00'::bytea
                                          || convert_to(l.fk_column, 'UTF8')), 12);
        EXECUTE format('CREATE OR REPLACE TRIGGER %1$I AFTER INSERT ON %4$s REFERENCING NEW TABLE AS new_rows
                            FOR EACH STATEMENT EXECUTE FUNCTION algolia_sync_enqueue_related(%5$L, %6$L, %7$L);
                        CREATE OR REPLACE TRIGGER %2$I AFTER UPDATE ON %4$s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                            FOR EACH STATEMENT EXECUTE FUNCTION algolia_sync_enqueue_related(%5$L, %6$L, %7$L);
                        CREATE OR REPLACE TRIGGER %3$I AFTER DELETE ON %4$s REFERENCING OLD TABLE AS old_rows
                            FOR EACH STATEMENT EXECUTE FUNCTION algolia_sync_enqueue_related(%5$L, %6$L, %7$L);
                        CREATE OR REPLACE TRIGGER %8$I BEFORE TRUNCATE ON %4$s
                            FOR EACH STATEMENT EXECUTE FUNCTION algolia_sync_enqueue_related(%5$L, %6$L, %7$L)',
                       tag || '_ins', tag || '_upd', tag || '_del', l.relation, l.table_name, l.fk_attnum,
                       l.ref_attnum, tag || '_tru');
    END LOOP;
END;
$$;

-- Capture runs as the role that writes a watched table, with that role's rights and nothing more
-- (no capture code is SECURITY DEFINER). So that every role that can write a watched table still
-- can, every role may add keys to the inbox, and do nothing else with it: a key added by hand only
-- makes a worker read that row's current state again.
GRANT INSERT ON TABLE algolia_sync_inbox TO PUBLIC;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                    WHERE n.nspname = current_schema() AND a.grantee = 0 AND a.privilege_type = 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO PUBLIC', current_schema());
    END IF;
END;
$$;

-- The roles the pool runs as (`workerpool migrate --worker-role NAME`): `watch` grants each of them
-- SELECT on the tables and source views it registers, and warns when one is a superuser or owns one.
CREATE TABLE algolia_sync_worker_roles (
    role_name  regrole PRIMARY KEY,
    granted_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON TABLE algolia_sync_worker_roles FROM PUBLIC;

-- Grant a worker role exactly what the pool needs: the queue's tables, the registrations (read
-- only), the version sequence, and SELECT on every watched table and source view (USAGE on their
-- schemas). No DDL, no ownership, nothing else.
CREATE FUNCTION algolia_sync_grant_worker(worker regrole) RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    own name := algolia_sync_schema();
    rel regclass;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', own, worker);
    EXECUTE format('GRANT SELECT ON TABLE algolia_index_config, algolia_index_related, algolia_sync_worker_roles,
                                          algolia_sync_stats TO %s', worker);
    IF to_regclass('workerpool_migrations') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON TABLE workerpool_migrations TO %s', worker);
    END IF;
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE algolia_sync_inbox, algolia_sync_queue,
                        algolia_sync_log_batches, algolia_sync_log, algolia_sync_hashes, algolia_sync_workers,
                        workerpool_reindex_progress TO %s', worker);
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE algolia_sync_version_seq TO %s', worker);
    FOR rel IN SELECT c.relation FROM algolia_index_config c WHERE c.relation IS NOT NULL
               UNION SELECT c.source FROM algolia_index_config c WHERE c.source IS NOT NULL LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %s TO %s; GRANT SELECT ON TABLE %s TO %s',
                       (SELECT c.relnamespace::regnamespace FROM pg_class c WHERE c.oid = rel), worker, rel, worker);
    END LOOP;
    INSERT INTO algolia_sync_worker_roles (role_name) VALUES (worker) ON CONFLICT DO NOTHING;
END;
$$;

-- Every workerpool function that sets a search_path gets the one safe path: pg_catalog first, then
-- workerpool's own schema (in which only trusted roles may create objects: `migrate` checks), then
-- pg_temp, last, so that no temporary object can shadow a name they use. `migrate` calls it after
-- every change, and the capture generator's own path is inherited by the code it generates.
CREATE FUNCTION algolia_sync_pin_search_paths() RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    own name := algolia_sync_schema();
    fn  regprocedure;
    n   integer := 0;
BEGIN
    FOR fn IN SELECT p.oid FROM pg_proc p
               WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = own)
                 AND (p.proname LIKE 'algolia\_sync\_%' OR p.proname IN ('get_pending_algolia_syncs', 'cleanup_old_sync_records'))
                 AND EXISTS (SELECT 1 FROM unnest(p.proconfig) AS s(setting) WHERE s.setting LIKE 'search\_path=%')
               ORDER BY p.oid LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', fn, own);
        n := n + 1;
    END LOOP;
    RETURN n;
END;
$$;


SELECT algolia_sync_pin_search_paths();
