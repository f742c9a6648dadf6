-- workerpool schema, version 18: composite keys. A table keyed by several columns (a composite
-- primary key, `watch --key a,b`, a partitioned table keyed by (partition key, id)) is watched: its
-- objectID is the array literal of its columns' texts, `{1,23}` (algolia_sync_key_text). The
-- registration keeps the key's columns and attnums; the capture generator takes the key's columns,
-- and `migrate` regenerates every capture function after this migration, as after any other.
-- A --related link's foreign key may have several columns too (its values travel as key texts).

ALTER TABLE algolia_index_config ADD COLUMN key_columns text[], ADD COLUMN key_attnums smallint[];
ALTER TABLE algolia_index_related ADD COLUMN fk_attnums smallint[], ADD COLUMN ref_attnums smallint[];
ALTER TABLE algolia_sync_inbox ADD COLUMN fk_attnums smallint[];

-- A key's text, as SQL over the row `alias` of `rel`: for a one-column key, that column's text; for
-- a key of several columns (attnums in key order), the text of the array of their texts, `{1,23}`:
-- PostgreSQL's array literal, whose quoting no part can forge (a part holding a comma, brace, quote,
-- backslash or space, or the word NULL, is quoted) and which `::text[]` turns back into the parts.
-- A built-in type is cast to text (no role can add a cast from it); any other (an enum) goes
-- through its output function, as a cast its owner adds cannot.
CREATE FUNCTION algolia_sync_key_text(rel regclass, attnums smallint[], alias text) RETURNS text
LANGUAGE sql STABLE
SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN count(*) <> cardinality(attnums) THEN NULL  -- a key column is gone
                WHEN count(*) = 1 THEN min(p.expr)
                ELSE 'ARRAY[' || string_agg(p.expr, ', ' ORDER BY p.i) || ']::pg_catalog.text' END
      FROM (SELECT x.i, CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace
                             THEN format('(%I.%I)::pg_catalog.text', alias, a.attname)
                             ELSE format('pg_catalog.format(''%%s'', %I.%I)', alias, a.attname) END AS expr
              FROM unnest(attnums) WITH ORDINALITY AS x(attnum, i)
              JOIN pg_attribute a ON a.attrelid = rel AND a.attnum = x.attnum AND NOT a.attisdropped
              JOIN pg_type d ON d.oid = a.atttypid
              JOIN pg_type t ON t.oid = CASE WHEN d.typtype = 'd' THEN d.typbasetype ELSE d.oid END) p;
$$;

-- Whether the row `alias` of `rel` has a key, as SQL: its key columns are not NULL. `every` tests
-- each column (so that the absent side of an outer join tests false); otherwise only the nullable
-- ones are tested, and a key of NOT NULL columns is 'true'.
CREATE FUNCTION algolia_sync_key_present(rel regclass, attnums smallint[], alias text, every boolean)
RETURNS text
LANGUAGE sql STABLE
SET search_path FROM CURRENT AS $$
    SELECT coalesce(string_agg(format('%I.%I IS NOT NULL', alias, a.attname), ' AND ' ORDER BY x.i), 'true')
      FROM unnest(attnums) WITH ORDINALITY AS x(attnum, i)
      JOIN pg_attribute a ON a.attrelid = rel AND a.attnum = x.attnum AND NOT a.attisdropped
     WHERE every OR NOT a.attnotnull;
$$;

DROP FUNCTION algolia_sync_create_capture(text, text, text, text[], regclass);

-- The capture generator: `watch` (and the DDL follower) create one statement-level trigger function
-- per watched table, fn_name, with the key columns (key_cols, in key order: one, or several for a
-- composite key) and the compared columns baked into static SQL (plpgsql caches the plans of static
-- statements). `tbl` is the registration's name (what the inbox rows carry), `rel` the table
-- itself. Each event's changed keys become inbox rows of at most 1,000 keys per operation, then one
-- NOTIFY:
-- * an UPDATE that changes none of the compared columns (`cols`; empty: the whole row, as ROW(n.*))
--   captures nothing; one that changes a key (any of its columns, a row moving to another partition
--   included) deletes the old key and writes the new one;
-- * a TRUNCATE (BEFORE, while the rows are still there) turns every key into a delete, reading the
--   table under whatever name it has when it runs (TG_RELID);
-- * a NULL key (a key column that is NULL, in a nullable unique key) is never captured: such a row
--   has no objectID;
-- * a key is turned into text by algolia_sync_key_text, a date/time one under algolia_sync_key_settings.
-- Two paths, because a single-row write must stay cheap and a bulk one must stream: the first 1,001
-- changes are gathered into arrays (one inbox row per operation when that is all of them); past
-- 1,000, one INSERT … SELECT streams the changes into 1,000-key rows, so a statement of any size
-- stays within memory and under the 1 GB limit of a single array. Every column reference in the
-- generated code is qualified by an alias of its own, so no user column name can make it ambiguous.
-- Returns the function's qualified name for the triggers to call.
CREATE FUNCTION algolia_sync_create_capture(fn_name text, tbl text, key_cols text[], cols text[], rel regclass)
RETURNS text
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $create$
DECLARE
    qualified  text := format('%I.%I', algolia_sync_schema(), fn_name);
    new_cmp    text := 'ROW(n.*)::pg_catalog.text';
    old_cmp    text := 'ROW(o.*)::pg_catalog.text';
    attnums    smallint[];
    pinned     text;
    has_key    text := '';
    either     text := '';
    joined     text;
    src        text[];
    small      text[];
    block      text[];
BEGIN
    SELECT array_agg(a.attnum ORDER BY x.i), max(algolia_sync_key_settings(a.atttypid::regtype)),
           string_agg(format('o.%1$I = n.%1$I', a.attname), ' AND ' ORDER BY x.i)
      INTO attnums, pinned, joined
      FROM unnest(key_cols) WITH ORDINALITY AS x(name, i)
      JOIN pg_attribute a ON a.attrelid = rel AND a.attname = x.name AND NOT a.attisdropped;
    -- Only a nullable key needs the filter (the spill drops NULL keys anyway; this keeps them out of
    -- the inbox); a primary key pays nothing for it.
    IF algolia_sync_key_present(rel, attnums, 'r', false) <> 'true' THEN
        has_key := ' AND ' || algolia_sync_key_present(rel, attnums, 'r', false);
        either := format(' AND ((%s) OR (%s))', algolia_sync_key_present(rel, attnums, 'n', true),
                         algolia_sync_key_present(rel, attnums, 'o', true));
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
               algolia_sync_key_text(rel, attnums, 'r'), has_key),
        format('SELECT CASE WHEN %1$s THEN %5$s ELSE %6$s END AS k,
                       CASE WHEN %1$s THEN ''UPDATE'' ELSE ''DELETE'' END AS op
                  FROM new_rows n FULL JOIN old_rows o ON %7$s
                 WHERE (NOT (%1$s) OR NOT (%8$s) OR %2$s IS DISTINCT FROM %3$s)%4$s',
               algolia_sync_key_present(rel, attnums, 'n', true), new_cmp, old_cmp, either,
               algolia_sync_key_text(rel, attnums, 'n'), algolia_sync_key_text(rel, attnums, 'o'), joined,
               algolia_sync_key_present(rel, attnums, 'o', true)),
        format('SELECT %s AS k, ''DELETE''::text AS op FROM old_rows r WHERE true%s',
               algolia_sync_key_text(rel, attnums, 'r'), has_key),
        -- Formatted again when it runs (FROM the table as it is then called): '%' in this text is
        -- doubled for that second pass.
        format('SELECT %s AS k, ''DELETE''::text AS op FROM %%s r WHERE true%s',
               replace(algolia_sync_key_text(rel, attnums, 'r'), '%', '%%'), replace(has_key, '%', '%%'))];
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

DROP FUNCTION algolia_sync_expand_related(text, smallint, text[], timestamptz);

-- The watched rows that point at changed rows of a related table, as they are now: their keys become
-- inbox rows of their own, with the change's capture time (the spill moves them on its next pass).
-- `refs` are the referenced values' text (a key text: algolia_sync_enqueue_related), `fks` the
-- watched table's foreign-key columns. Runs as the pool's role, which reads the watched table
-- anyway, so the roles that write a related table need no right on the watched one. A link whose
-- table or column is gone points at nothing; a read that fails becomes one failed queue row that
-- says why, never a failed spill.
CREATE FUNCTION algolia_sync_expand_related(tbl text, fks smallint[], refs text[], captured timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET DateStyle = 'ISO, YMD' SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' AS $$
DECLARE
    rel      regclass;
    key_text text;
    has_key  text;
    fk_col   text;
    fk_match text;
    builtin  boolean;
    parts    integer;
    cols     text;
    casts    text;
BEGIN
    SELECT c.relation,
           algolia_sync_key_text(c.relation, coalesce(c.key_attnums, ARRAY[c.key_attnum]), 't'),
           algolia_sync_key_present(c.relation, coalesce(c.key_attnums, ARRAY[c.key_attnum]), 't', true)
      INTO rel, key_text, has_key
      FROM algolia_index_config c
     WHERE c.table_name = tbl AND c.enabled;
    -- A built-in type: the values are cast to it, the domain's base type (a domain's CHECK is its
    -- owner's code), so an index on the foreign key serves the match. Any other (an enum): compared
    -- as text, as a cast its owner may have added is not run.
    SELECT bool_and(b.typnamespace = 'pg_catalog'::regnamespace), count(*),
           string_agg(format('t.%I', f.attname), ', ' ORDER BY x.i),
           string_agg(format('(r.v::pg_catalog.text[])[%s]::%s', x.i, format_type(b.oid, NULL)), ', ' ORDER BY x.i),
           string_agg(f.attname, ', ' ORDER BY x.i),
           min(format('t.%I = ANY($2::%s[])', f.attname, format_type(b.oid, NULL)))
      INTO builtin, parts, cols, casts, fk_col, fk_match
      FROM unnest(fks) WITH ORDINALITY AS x(attnum, i)
      JOIN pg_attribute f ON f.attrelid = rel AND f.attnum = x.attnum AND NOT f.attisdropped
      JOIN pg_type t ON t.oid = f.atttypid
      JOIN pg_type b ON b.oid = coalesce(nullif(t.typbasetype, 0), t.oid);
    IF rel IS NULL OR key_text IS NULL OR parts < cardinality(fks) THEN
        RETURN;  -- the table, a key column or a foreign-key column is gone
    END IF;
    IF NOT builtin THEN
        fk_match := format('%s = ANY($2)', algolia_sync_key_text(rel, fks, 't'));
    ELSIF parts > 1 THEN
        fk_match := format('(%s) IN (SELECT %s FROM unnest($2) AS r(v))', cols, casts);
    END IF;
    EXECUTE format(
        'INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids, created_at)
         SELECT $1, ''UPDATE'', count(*), array_agg(c.k), $3
           FROM (SELECT %1$s AS k, (row_number() OVER () - 1) / 1000 AS chunk
                   FROM %2$s t WHERE %3$s AND %4$s) c
          GROUP BY c.chunk', key_text, rel, fk_match, has_key)
    USING tbl, refs, captured;
EXCEPTION WHEN OTHERS THEN
    INSERT INTO algolia_sync_queue (table_name, record_id, operation, status, created_at, last_error)
    VALUES (tbl, left(format('(rows of %s pointing at %s)', fk_col, refs[1]), 100), 'UPDATE', 'failed', captured,
            format('could not find the rows of %s whose %s points at a changed related row (%s): %s; '
                   'run `workerpool verify %s --repair`', rel, fk_col, array_to_string(refs[1:5], ', '), SQLERRM, rel));
END;
$$;

-- Move inbox rows, oldest first, into the queue: whole rows until max_keys keys (at least one row),
-- coalescing with pending rows; returns how many queue rows that inserted or merged. Workers call it
-- before they claim. A NULL key is dropped, and a key longer than algolia_sync_max_key_bytes()
-- becomes a failed row whose record_id is the key's first bytes and whose last_error says why (one
-- per key, however often it is spilled), so that no key can fail the statement that every claim runs
-- first. A lock wait (another
-- transaction's uncommitted pending row of the same key: a `reindex` chunk, a `retry-failed`) gives
-- up after lock_timeout instead of queueing behind, or deadlocking with, that transaction: the
-- inbox rows stay for the next call.
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
        PERFORM algolia_sync_expand_related(x.table_name, coalesce(x.fk_attnums, ARRAY[x.fk_attnum]), x.record_ids, x.created_at)
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

-- Propagation from a related table, set-wise, into the inbox: renaming one brand enqueues all of its
-- products. The referenced values are turned into text under pinned settings (always: one generic
-- function serves every link), as algolia_sync_key_text writes a key: one column's text, or for a
-- foreign key of several columns the array literal of theirs. A TRUNCATE (BEFORE, while the related
-- rows are still there) re-enqueues every watched row that points at any of them.
-- TG_ARGV: [0] the registration's name, [1] the watched table's foreign-key column (attnum, or an
-- array of them: '{2,3}'), [2] the related table's referenced column (attnum, or an array of them):
-- renaming either table or any of the columns changes nothing. Runs as the writing role and reads
-- only its own statement's rows: the referenced values go to the inbox as one RELATED row, and the
-- spill, run by the pool, finds the watched rows.
CREATE OR REPLACE FUNCTION algolia_sync_enqueue_related() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET DateStyle = 'ISO, YMD' SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' AS $$
DECLARE
    tbl     text := TG_ARGV[0];
    fks     smallint[] := CASE WHEN left(TG_ARGV[1], 1) = '{' THEN TG_ARGV[1]::smallint[] ELSE ARRAY[TG_ARGV[1]::smallint] END;
    ref_at  smallint[] := CASE WHEN left(TG_ARGV[2], 1) = '{' THEN TG_ARGV[2]::smallint[] ELSE ARRAY[TG_ARGV[2]::smallint] END;
    ref_r   text := algolia_sync_key_text(TG_RELID, ref_at, 'r');
    joined  text;
    refs    text;
    n       bigint;
BEGIN
    IF ref_r IS NULL THEN
        RETURN NULL;  -- a referenced column was dropped: nothing can point at it any more
    END IF;
    IF TG_OP = 'INSERT' THEN
        refs := format('SELECT %s FROM new_rows r WHERE %s', ref_r, algolia_sync_key_present(TG_RELID, ref_at, 'r', true));
    ELSIF TG_OP = 'DELETE' THEN
        refs := format('SELECT %s FROM old_rows r WHERE %s', ref_r, algolia_sync_key_present(TG_RELID, ref_at, 'r', true));
    ELSIF TG_OP = 'TRUNCATE' THEN
        refs := format('SELECT %s FROM %s r WHERE %s', ref_r, TG_RELID::regclass,
                       algolia_sync_key_present(TG_RELID, ref_at, 'r', true));
    ELSE
        SELECT string_agg(format('o.%1$I = n.%1$I', a.attname), ' AND ') INTO joined
          FROM unnest(ref_at) AS x(attnum)
          JOIN pg_attribute a ON a.attrelid = TG_RELID AND a.attnum = x.attnum AND NOT a.attisdropped;
        refs := format(
            'SELECT CASE WHEN %1$s THEN %2$s ELSE %3$s END FROM new_rows n FULL JOIN old_rows o ON %4$s
              WHERE (NOT (%1$s) OR NOT (%5$s) OR ROW(n.*)::text IS DISTINCT FROM ROW(o.*)::text) AND ((%1$s) OR (%5$s))',
            algolia_sync_key_present(TG_RELID, ref_at, 'n', true), algolia_sync_key_text(TG_RELID, ref_at, 'n'),
            algolia_sync_key_text(TG_RELID, ref_at, 'o'), joined, algolia_sync_key_present(TG_RELID, ref_at, 'o', true));
    END IF;
    EXECUTE format(
        'INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids, fk_attnum, fk_attnums)
         SELECT $1, ''RELATED'', count(*), array_agg(c.v), $2[1], CASE WHEN cardinality($2) > 1 THEN $2 END
           FROM (SELECT d.v, (row_number() OVER () - 1) / 1000 AS chunk
                   FROM (SELECT DISTINCT x.v FROM (%s) AS x(v)) d) c
          GROUP BY c.chunk', refs)
    USING tbl, fks;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify(algolia_sync_channel(), tbl);
    END IF;
    RETURN NULL;
END;
$$;

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
    new_key  text[];
    attrs    text[];
    fn       text;
BEGIN
  BEGIN
    FOR c IN SELECT DISTINCT cfg.table_name, cfg.relation, coalesce(cfg.key_attnums, ARRAY[cfg.key_attnum]) AS key_attnums,
                    cfg.key_attnums IS NOT NULL AS composite, cfg.attribute_attnums
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
            new_key := ARRAY(SELECT a.attname FROM unnest(c.key_attnums) WITH ORDINALITY AS x(attnum, i)
                               JOIN pg_attribute a ON a.attrelid = c.relation AND a.attnum = x.attnum AND NOT a.attisdropped
                              ORDER BY x.i);
            IF cardinality(new_key) < cardinality(c.key_attnums) THEN
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
               SET key_column = array_to_string(new_key, ','),
                   key_columns = CASE WHEN c.composite THEN new_key END,
                   key_type = (SELECT string_agg(format_type(a.atttypid, a.atttypmod), ',' ORDER BY x.i)
                                 FROM unnest(c.key_attnums) WITH ORDINALITY AS x(attnum, i)
                                 JOIN pg_attribute a ON a.attrelid = c.relation AND a.attnum = x.attnum),
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
