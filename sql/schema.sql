-- workerpool schema: the complete current definition, in one file.
--
-- A new install runs this file in one transaction and records every migration in migrations/ as
-- applied; an existing install applies the migrations it lacks. The two must end in the same schema
-- (tests/integration/test_schema.py compares them), so a change here comes with a new migration.
--
-- The names algolia_sync_queue, algolia_sync_log, algolia_index_config, algolia_sync_stats,
-- get_pending_algolia_syncs and cleanup_old_sync_records are the seed-compatible surface (DESIGN.md).
-- Every other object is named algolia_sync_* or workerpool_*.
--
-- Contents: registrations; capture (triggers -> inbox); the queue and its operations; what was sent
-- (log, hashes, versions); workers and reindex progress; monitoring and housekeeping; following DDL.


-- ---------------------------------------------------------------------------------------------
-- Registrations: which tables feed which index.
-- ---------------------------------------------------------------------------------------------

-- One row per watched table. table_name is the registration's name (the table's regclass text when
-- `watch` ran); `relation` and `source` hold the table and the source view as regclass (an oid that
-- prints as the current, quoted name): the worker reads from them, never from SQL text.
-- `key_attnum` and `attribute_attnums` (a plain table's --attributes, in their order) find those
-- columns again after a rename. `disabled_reason` says why a registration stopped capturing.
-- A key of several columns (a composite primary key, `--key a,b`) is `key_columns` and
-- `key_attnums`, in key order; `key_column` and `key_type` then hold the names and types joined by
-- commas, for reading, and `key_attnum` the first. Both are NULL for a one-column key.
CREATE TABLE algolia_index_config (
    table_name   text PRIMARY KEY,
    index_name   text NOT NULL,
    key_column   text NOT NULL,
    key_type     text NOT NULL,
    source_view  text,
    attributes   text[],   -- columns that make up the record (NULL: all of them)
    transform    text,     -- 'module:function' applied to each record, or NULL
    settings     jsonb,    -- Algolia index settings kept as code (`workerpool settings push`)
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    relation          regclass,
    source            regclass,
    key_attnum        smallint,
    attribute_attnums smallint[],
    disabled_reason   text,
    key_columns       text[],
    key_attnums       smallint[]
);

-- A change to related_table re-enqueues the rows of table_name whose fk_column points at it.
-- `relation`, `fk_attnum` and `ref_attnum` find the related table and both columns again after a
-- rename (the names are what `watch` was given). A link whose foreign key has several columns
-- (`prices:store_id,sku:store_id,sku`) keeps their attnums in `fk_attnums` and `ref_attnums`, in
-- order, `fk_attnum` and `ref_attnum` the first, and the names joined by commas.
CREATE TABLE algolia_index_related (
    table_name    text NOT NULL REFERENCES algolia_index_config (table_name) ON DELETE CASCADE,
    related_table text NOT NULL,
    fk_column     text NOT NULL,
    ref_column    text NOT NULL,
    relation      regclass,
    fk_attnum     smallint,
    ref_attnum    smallint,
    fk_attnums    smallint[],
    ref_attnums   smallint[],
    PRIMARY KEY (table_name, related_table, fk_column)
);

-- Registrations are code: transforms are imported and views are queried by the workers.
REVOKE ALL ON TABLE algolia_index_config, algolia_index_related FROM PUBLIC;


-- ---------------------------------------------------------------------------------------------
-- Capture: statement-level triggers write each statement's keys into the inbox and NOTIFY.
-- ---------------------------------------------------------------------------------------------

-- The channel every capture NOTIFYs and every worker LISTENs on.
CREATE FUNCTION algolia_sync_channel() RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'algolia_sync' $$;

-- The name of a watched table's capture function, from its registration name.
CREATE FUNCTION algolia_sync_capture_name(table_name text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path FROM CURRENT AS $$ SELECT 'algolia_sync_capture_' || left(md5(table_name), 16) $$;

-- Keys captured and not yet moved into the queue: one row per statement and operation, 1,000 keys
-- at most per row. No index at all, so that a capture costs the writer as little as possible; the
-- table stays small (workers empty it continuously), so a spill sorts it by capture time instead.
-- Rows are inserted and deleted, never updated: vacuum often and unthrottled.
-- A RELATED row holds the referenced values of changed rows of a related table (record_ids) and
-- the watched table's foreign-key column (fk_attnum, or fk_attnums for a foreign key of several
-- columns, whose values are then each referenced row's key text): the spill turns it into the
-- watched keys.
CREATE TABLE algolia_sync_inbox (
    table_name  text NOT NULL,
    operation   text NOT NULL CONSTRAINT algolia_sync_inbox_operation_check
                CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE', 'RELATED')),
    keys        integer NOT NULL,   -- cardinality(record_ids), readable without detoasting the array
    record_ids  text[] NOT NULL,
    -- clock_timestamp(), not now(): two statements of one transaction keep their order.
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    fk_attnum   smallint,
    fk_attnums  smallint[]  -- a foreign key of several columns (then fk_attnum is the first)
) WITH (autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_cost_delay = 0,
        autovacuum_vacuum_insert_threshold = 1000);

-- The schema workerpool is installed in: where its inbox is (every workerpool function's search_path
-- names it).
CREATE FUNCTION algolia_sync_schema() RETURNS name
LANGUAGE sql STABLE
SET search_path FROM CURRENT AS $$
    SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = 'algolia_sync_inbox'::regclass
$$;

-- The settings under which a key's text is canonical: DateStyle, TimeZone and IntervalStyle pinned
-- for a date/time key (domains included), so that the objectID depends on the row alone. Returned as
-- the SET clauses of a CREATE FUNCTION, or '' when the key type's text form does not depend on them.
CREATE FUNCTION algolia_sync_key_settings(key_type regtype) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN t.typcategory IN ('D', 'T')
                THEN 'SET DateStyle = ''ISO, YMD'' SET TimeZone = ''UTC'' SET IntervalStyle = ''postgres'''
                ELSE '' END
      FROM pg_type t
     WHERE t.oid = (SELECT CASE WHEN d.typtype = 'd' THEN d.typbasetype ELSE d.oid END
                      FROM pg_type d WHERE d.oid = key_type);
$$;

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

-- Attach a watched table's capture function: statement-level triggers on the table and on each of
-- its partitions (statement triggers fire only on the table a statement names, so writes made
-- directly into a partition need their own). CREATE OR REPLACE: safe to repeat.
CREATE FUNCTION algolia_sync_attach(rel regclass, fn text) RETURNS void
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
CREATE FUNCTION algolia_sync_detach(rel regclass) RETURNS void
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
CREATE FUNCTION algolia_sync_enqueue_related() RETURNS trigger
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


-- ---------------------------------------------------------------------------------------------
-- The queue: one row per pending key, plus rows being processed and rows that failed.
-- ---------------------------------------------------------------------------------------------

-- Acknowledged rows are deleted (they live on in algolia_sync_log), so the table stays small.
-- Every synced record leaves dead row versions behind (the claimed one and the acknowledged one):
-- fillfactor keeps claim/release updates HOT, and autovacuum runs as soon as a few thousand dead
-- versions exist, unthrottled.
CREATE TABLE algolia_sync_queue (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name      text NOT NULL,
    record_id       text NOT NULL,
    operation       text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE', 'REINDEX')),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    claim_token     uuid,
    claimed_at      timestamptz,
    claimed_by      text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- A claim token means the row is being processed: an acknowledgement finds its rows by token.
    CONSTRAINT algolia_sync_queue_token_check CHECK (claim_token IS NULL OR status = 'processing')
) WITH (fillfactor = 70,
        autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_cost_delay = 0,
        autovacuum_vacuum_insert_threshold = 1000,
        autovacuum_analyze_threshold = 1000,
        autovacuum_analyze_scale_factor = 0.02);

-- Coalescing: at most one pending row per key; further changes merge into it.
CREATE UNIQUE INDEX algolia_sync_queue_pending_key
    ON algolia_sync_queue (table_name, record_id) WHERE status = 'pending';
-- The claim scans due pending rows in order.
CREATE INDEX algolia_sync_queue_due
    ON algolia_sync_queue (next_attempt_at, id) WHERE status = 'pending';
-- Per-key serialization and lease recovery look at rows being processed.
CREATE INDEX algolia_sync_queue_processing
    ON algolia_sync_queue (table_name, record_id, locked_until) WHERE status = 'processing';
-- An acknowledgement drops the failed rows of its keys, found per key.
CREATE INDEX algolia_sync_queue_failed_key
    ON algolia_sync_queue (table_name, record_id) WHERE status = 'failed';

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

-- The longest key text (in bytes) that becomes an objectID; a longer key fails alone (see the
-- spill). It keeps every queue index entry far under btree's ~2,700-byte limit.
CREATE FUNCTION algolia_sync_max_key_bytes() RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT 1000 $$;

-- Move inbox rows, oldest first, into the queue: whole rows until max_keys keys (at least one row),
-- coalescing with pending rows; returns how many queue rows that inserted or merged. Workers call it
-- before they claim. A NULL key is dropped, and a key longer than algolia_sync_max_key_bytes()
-- becomes a failed row whose record_id is the key's first bytes and whose last_error says why (one
-- per key, however often it is spilled), so that no key can fail the statement that every claim runs
-- first. A lock wait (another
-- transaction's uncommitted pending row of the same key: a `reindex` chunk, a `retry-failed`) gives
-- up after lock_timeout instead of queueing behind, or deadlocking with, that transaction: the
-- inbox rows stay for the next call.
CREATE FUNCTION algolia_sync_spill(max_keys integer) RETURNS integer
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

-- The claim: up to batch_size due rows, skipping rows other workers hold (SKIP LOCKED) and keys
-- that have a live claim (per-key serialization: an older state never overtakes a newer one).
-- Attempts are counted here, at claim time. PL/pgSQL, whose statement plans last the session: a SQL
-- function's statement is planned again on every call (~0.4 us of Postgres CPU per record claimed at
-- 1,000 a call).
CREATE FUNCTION get_pending_algolia_syncs(
    batch_size integer,
    lease_ms integer DEFAULT 60000,
    token uuid DEFAULT gen_random_uuid(),
    worker text DEFAULT NULL
) RETURNS TABLE (id bigint, table_name text, record_id text, operation text, attempts integer,
                 created_at timestamptz, claim_token uuid)
LANGUAGE plpgsql
-- The per-key check must be an index probe per candidate. Queue statistics are stale in any burst
-- (analyzed with no row processing, the planner materialized all 6,000 live claims and compared
-- every candidate with each: 13 s per claim); without material, hash and merge joins it cannot.
SET enable_material = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET search_path FROM CURRENT
SET enable_seqscan = off AS $$
BEGIN
    -- `id = ANY(ARRAY(...))`, not a join with a CTE: the planner cannot size a CTE and would hash
    -- the whole queue table on every claim, making a drain quadratic.
    RETURN QUERY
    UPDATE algolia_sync_queue q
       SET status = 'processing', claim_token = token, claimed_by = worker,
           -- clock_timestamp(), not now(): this UPDATE's snapshot is taken after the transaction
           -- started, so an ack committed in between would otherwise look like an overlapping claim.
           claimed_at = clock_timestamp(), locked_until = now() + make_interval(secs => lease_ms / 1000.0),
           attempts = q.attempts + 1, updated_at = now()
     WHERE q.id = ANY(ARRAY(
        SELECT d.id
          FROM algolia_sync_queue d
         WHERE d.status = 'pending' AND d.next_attempt_at <= now()
           AND NOT EXISTS (SELECT 1 FROM algolia_sync_queue p
                            WHERE p.status = 'processing' AND p.table_name = d.table_name
                              AND p.record_id = d.record_id AND p.locked_until >= now())
         ORDER BY d.next_attempt_at, d.id
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED))
    RETURNING q.id, q.table_name, q.record_id, q.operation, q.attempts, q.created_at, q.claim_token;
END;
$$;

-- Acknowledge: delete the rows this claim still holds, log them, remember what was sent (hashes)
-- and forget deleted records; earlier failures of an acknowledged key are dropped. A worker that
-- lost its lease (token no longer matches) acknowledges nothing. The outcome goes through arrays,
-- not one statement, so no row is changed twice in a statement. `stored` says, per sent record,
-- whether its key had a hash when the worker read it (NULL: not known). A worker passes its records
-- in id order and split into the hash groups (new_*: first hashes; sent_*: the other sent records;
-- gone_*: deleted records), without hashes, shapes or stored: when the claim still held all of
-- them, the log row and the hash writes take the arrays as they are, with no join (measured: 7.2
-- against 8.9 us of Postgres CPU per record at 1,000 a call). A call without the groups (new_ids
-- NULL) is split here.
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

-- Give rows back: retry later (with backoff), or fail for good. Only rows this claim still holds.
-- Rows going back to pending merge into a newer pending row of the same key instead of colliding
-- with it. count_attempt = false undoes the claim's attempt (throttling, graceful release).
CREATE FUNCTION algolia_sync_release(ids bigint[], token uuid, errors text[], delays_ms integer[],
                                     permanent boolean[], max_attempts integer,
                                     count_attempt boolean DEFAULT true) RETURNS integer
LANGUAGE plpgsql
SET enable_material = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET search_path FROM CURRENT
SET enable_seqscan = off AS $$
DECLARE
    changed integer := 0;
    n integer;
    tries integer := 0;
BEGIN
    -- Failed for good: a permanent error, or the attempts are spent.
    WITH r AS (
        SELECT * FROM unnest(ids, errors, delays_ms, permanent) WITH ORDINALITY
                      AS u(id, error, delay_ms, permanent, pos)
    ), gone AS (
        UPDATE algolia_sync_queue q
           SET status = 'failed', last_error = r.error, claim_token = NULL, locked_until = NULL,
               updated_at = now(),
               attempts = CASE WHEN count_attempt THEN q.attempts ELSE greatest(q.attempts - 1, 0) END
          FROM r
         WHERE q.id = r.id AND q.claim_token = token AND q.status = 'processing'
           AND (r.permanent OR (count_attempt AND q.attempts >= max_attempts))
        RETURNING q.*, r.pos
    ), logged AS (
        -- One log row for the rows failed for good (no index name or action: nothing was sent).
        INSERT INTO algolia_sync_log_batches (claim_token, claimed_by, queue_ids, table_names, record_ids,
                                              operations, statuses, attempts, errors, enqueued_at, claimed_at)
        SELECT token, g.claimed_by, array_agg(g.id), array_agg(g.table_name), array_agg(g.record_id),
               array_agg(g.operation), array_agg('failed'::text), array_agg(g.attempts),
               array_agg(g.last_error), array_agg(g.created_at), array_agg(g.claimed_at)
          FROM gone g
         GROUP BY g.claimed_by, g.pos / 1048576
    )
    SELECT count(*) INTO n FROM gone;
    changed := changed + n;

    LOOP
        BEGIN
            -- A newer change to the key is already pending: it supersedes this row.
            DELETE FROM algolia_sync_queue q
             WHERE q.id = ANY(ids) AND q.claim_token = token AND q.status = 'processing'
               AND EXISTS (SELECT 1 FROM algolia_sync_queue p
                            WHERE p.status = 'pending' AND p.table_name = q.table_name
                              AND p.record_id = q.record_id);
            GET DIAGNOSTICS n = ROW_COUNT;
            changed := changed + n;

            UPDATE algolia_sync_queue q
               SET status = 'pending', last_error = r.error, claim_token = NULL, locked_until = NULL,
                   next_attempt_at = now() + make_interval(secs => r.delay_ms / 1000.0),
                   attempts = CASE WHEN count_attempt THEN q.attempts ELSE greatest(q.attempts - 1, 0) END,
                   updated_at = now()
              FROM unnest(ids, errors, delays_ms) AS r(id, error, delay_ms)
             WHERE q.id = r.id AND q.claim_token = token AND q.status = 'processing';
            GET DIAGNOSTICS n = ROW_COUNT;
            changed := changed + n;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            -- A writer enqueued one of these keys between the two statements: merge again.
            tries := tries + 1;
            IF tries > 5 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    RETURN changed;
END;
$$;

-- Return rows whose lease expired to the queue, merging into a newer pending row of the same key
-- (the unique pending index forbids two). A row that has used up its attempts this way (a batch
-- that keeps killing its worker) becomes failed instead of looping.
CREATE FUNCTION algolia_sync_recover_expired(max_attempts integer) RETURNS integer
LANGUAGE plpgsql
-- Per-key checks as index probes whatever the (stale) statistics say; see get_pending_algolia_syncs.
-- Planned once per session, possibly right after an ANALYZE of an empty queue: no statement here may
-- scan the queue (enable_seqscan = off), and the per-key checks are scalar subqueries (below).
SET enable_material = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET search_path FROM CURRENT
SET enable_seqscan = off AS $$
DECLARE
    recovered integer := 0;
    n integer;
BEGIN
    UPDATE algolia_sync_queue
       SET status = 'failed', claim_token = NULL, locked_until = NULL, updated_at = now(),
           last_error = format('lease expired after %s attempts (worker crashed or stalled while holding it)', attempts)
     WHERE status = 'processing' AND locked_until < now() AND attempts >= max_attempts;
    GET DIAGNOSTICS n = ROW_COUNT;
    recovered := recovered + n;

    -- A key can have several expired claims (its worker died, a later claim of a newer change died
    -- too); one row per key goes back, the newest, so the UPDATE below cannot collide with itself.
    -- Scalar subqueries, not EXISTS: two EXISTS under an OR may be planned as a hash of every
    -- pending row built on each call (or, with stale statistics, a scan of them per expired claim);
    -- a scalar subquery is one index probe per expired claim in any plan.
    DELETE FROM algolia_sync_queue q
     WHERE q.status = 'processing' AND q.locked_until < now()
       AND coalesce((SELECT true FROM algolia_sync_queue p
                      WHERE p.status = 'pending' AND p.table_name = q.table_name AND p.record_id = q.record_id
                      LIMIT 1),
                    (SELECT true FROM algolia_sync_queue p
                      WHERE p.status = 'processing' AND p.table_name = q.table_name
                        AND p.record_id = q.record_id AND p.locked_until < now() AND p.id > q.id
                      LIMIT 1),
                    false);
    GET DIAGNOSTICS n = ROW_COUNT;
    recovered := recovered + n;

    BEGIN
        UPDATE algolia_sync_queue
           SET status = 'pending', claim_token = NULL, locked_until = NULL, updated_at = now(),
               next_attempt_at = now()
         WHERE status = 'processing' AND locked_until < now();
        GET DIAGNOSTICS n = ROW_COUNT;
        recovered := recovered + n;
    EXCEPTION WHEN unique_violation THEN
        -- A writer enqueued the same key between the two statements; the next claim retries.
        NULL;
    END;
    RETURN recovered;
END;
$$;

-- Whether a failed row is the spill's record of a key over algolia_sync_max_key_bytes(): its
-- record_id is only the key's first bytes, so it can never be synced, and `retry-failed` must leave
-- it (and its reason) in place instead of sending a delete for that truncated objectID.
CREATE FUNCTION algolia_sync_key_too_long(record_id text, last_error text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT record_id LIKE '%…' AND last_error LIKE 'key is % bytes long, over the %-byte limit for an objectID:%'
$$;

-- `workerpool retry-failed`: failed rows go back to the queue with fresh attempts, merging into a
-- pending row of the same key when one exists.
CREATE FUNCTION algolia_sync_retry_failed(only_table text DEFAULT NULL, only_ids bigint[] DEFAULT NULL)
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


-- ---------------------------------------------------------------------------------------------
-- What was sent: the log, the hashes, record versions.
-- ---------------------------------------------------------------------------------------------

-- Append-only history of every outcome, one row per acknowledgement or release call: the call's
-- records are arrays, in the order of the call (a row per record cost Postgres ~3 us per synced
-- record in heap and btree writes; a row per call costs a fraction of that). Read it through the
-- view algolia_sync_log (one row per record, the seed's columns). Pruned by retention in small
-- batches of calls; vacuum at 2% dead so freed pages are reused, and after 5% inserts to keep its
-- visibility map current. Arrays that a writer leaves NULL read as NULL in every record (a release
-- sends no index name or action, an acknowledgement no error).
CREATE TABLE algolia_sync_log_batches (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    synced_at    timestamptz NOT NULL DEFAULT now(),
    claim_token  uuid,
    claimed_by   text,
    queue_ids    bigint[],
    table_names  text[] NOT NULL,
    record_ids   text[] NOT NULL,
    index_names  text[],
    operations   text[] NOT NULL,
    actions      text[],
    statuses     text[] NOT NULL,
    attempts     integer[] NOT NULL,
    errors       text[],
    enqueued_at  timestamptz[],
    claimed_at   timestamptz[],
    -- When Algolia published the claim's last followed task (searchable): set for the claims a worker
    -- follows (TASK_TRACKING, a sample under load), NULL for the others.
    published_at timestamptz,
    -- 1 to 2^20 records (the view's ids leave room for no more), one per element of each array.
    CONSTRAINT algolia_sync_log_batches_records_check CHECK (
        cardinality(table_names) BETWEEN 1 AND 1048576
        AND cardinality(record_ids) = cardinality(table_names)
        AND cardinality(operations) = cardinality(table_names)
        AND cardinality(statuses) = cardinality(table_names)
        AND cardinality(attempts) = cardinality(table_names)
        AND array_position(table_names, NULL) IS NULL AND array_position(record_ids, NULL) IS NULL
        AND array_position(operations, NULL) IS NULL AND array_position(attempts, NULL) IS NULL),
    CONSTRAINT algolia_sync_log_batches_statuses_check
        CHECK (statuses <@ ARRAY['success', 'failed', 'retry', 'skipped'])
) WITH (autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_vacuum_insert_scale_factor = 0.05,
        autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX algolia_sync_log_batches_synced_at ON algolia_sync_log_batches (synced_at);

-- The arrays of a 1,000-record call take ~100 kB: TOAST compresses them. pglz, the default, spends
-- ~1.9 us per record doing it (measured: 2.4 us per record written, against 0.6 with lz4, 0.85 with
-- no compression and 2.6 for a row per record); lz4 is cheap and stores a fifth of uncompressed (4.5
-- against 24 MB per 100,000 records). A server built without lz4 stores them uncompressed (EXTERNAL).
DO $$
DECLARE
    col  text;
    lz4  boolean := EXISTS (SELECT 1 FROM pg_settings
                             WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals));
BEGIN
    FOREACH col IN ARRAY ARRAY['queue_ids', 'table_names', 'record_ids', 'index_names', 'operations',
                               'actions', 'statuses', 'attempts', 'errors', 'enqueued_at', 'claimed_at'] LOOP
        IF lz4 THEN
            EXECUTE format('ALTER TABLE algolia_sync_log_batches ALTER COLUMN %I SET COMPRESSION lz4', col);
        ELSE
            EXECUTE format('ALTER TABLE algolia_sync_log_batches ALTER COLUMN %I SET STORAGE EXTERNAL', col);
        END IF;
    END LOOP;
END;
$$;

-- The seed's log, one row per record, with its columns and types. A record's id is its call's id
-- times 2^20 plus its place in the call: unique, and growing with time as the calls' ids do (a writer
-- splits a call of more than 2^20 records). A WHERE on synced_at (or claim_token, claimed_by) applies
-- to the calls, through their synced_at index, before any array is unnested.
CREATE VIEW algolia_sync_log AS
SELECT b.id * 1048576 + r.n AS id, r.queue_id, r.table_name, r.record_id, r.index_name, r.operation,
       r.action, r.status, r.attempts, r.error, b.claim_token, b.claimed_by, r.enqueued_at, r.claimed_at,
       b.synced_at
  FROM algolia_sync_log_batches b
 CROSS JOIN LATERAL unnest(b.queue_ids, b.table_names, b.record_ids, b.index_names, b.operations, b.actions,
                           b.statuses, b.attempts, b.errors, b.enqueued_at, b.claimed_at)
       WITH ORDINALITY AS r(queue_id, table_name, record_id, index_name, operation, action, status, attempts,
                            error, enqueued_at, claimed_at, n);
ALTER VIEW algolia_sync_log ALTER COLUMN attempts SET DEFAULT 0;
ALTER VIEW algolia_sync_log ALTER COLUMN synced_at SET DEFAULT now();

-- Writing a log row by hand (tests, an operator's note) still works: each becomes a call of one record.
-- The id is assigned, as it was by the table's identity column.
CREATE FUNCTION algolia_sync_log_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.id IS NOT NULL THEN
        RAISE EXCEPTION 'cannot insert a non-DEFAULT value into column "id" of algolia_sync_log'
              USING ERRCODE = 'generated_always', HINT = 'Leave id out: it is assigned.';
    END IF;
    INSERT INTO algolia_sync_log_batches (synced_at, claim_token, claimed_by, queue_ids, table_names, record_ids,
                                          index_names, operations, actions, statuses, attempts, errors,
                                          enqueued_at, claimed_at)
    VALUES (NEW.synced_at, NEW.claim_token, NEW.claimed_by, ARRAY[NEW.queue_id], ARRAY[NEW.table_name],
            ARRAY[NEW.record_id], ARRAY[NEW.index_name], ARRAY[NEW.operation], ARRAY[NEW.action],
            ARRAY[NEW.status], ARRAY[NEW.attempts], ARRAY[NEW.error], ARRAY[NEW.enqueued_at],
            ARRAY[NEW.claimed_at])
    RETURNING id * 1048576 + 1 INTO NEW.id;
    RETURN NEW;
END;
$$;
CREATE TRIGGER algolia_sync_log_insert INSTEAD OF INSERT ON algolia_sync_log
    FOR EACH ROW EXECUTE FUNCTION algolia_sync_log_insert();

-- What was last sent for each record: a content hash (to skip unchanged records) and a hash of its
-- attribute names (a record whose attribute set changed is replaced whole, so that attributes that
-- disappear from it disappear from the index too). Updated in place on each re-send: fillfactor 80
-- keeps those updates HOT.
CREATE TABLE algolia_sync_hashes (
    index_name text NOT NULL,
    object_id  text NOT NULL,
    hash       bytea NOT NULL,
    shape      bytea NOT NULL,
    PRIMARY KEY (index_name, object_id)
) WITH (fillfactor = 80,
        autovacuum_vacuum_scale_factor = 0.05,
        autovacuum_analyze_scale_factor = 0.05);

-- Record versions: taken when a worker reads the current state, so a later read is always newer.
CREATE SEQUENCE algolia_sync_version_seq;


-- ---------------------------------------------------------------------------------------------
-- Workers and reindex progress.
-- ---------------------------------------------------------------------------------------------

-- Live workers, by heartbeat (stats, health, and the operator's "who is running"). A heartbeat
-- updates each worker's row every few seconds; half-empty pages keep every update HOT.
CREATE TABLE algolia_sync_workers (
    worker_id      text PRIMARY KEY,
    host           text NOT NULL,
    pid            integer NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    heartbeat_at   timestamptz NOT NULL DEFAULT now(),
    batches        bigint NOT NULL DEFAULT 0,
    records        bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 50);

-- Where `workerpool reindex` keeps its place, so that an interrupted run resumes where it stopped
-- (one row per table being reindexed).
CREATE TABLE workerpool_reindex_progress (
    table_name text PRIMARY KEY,
    mode       text NOT NULL CHECK (mode IN ('queue', 'atomic')),
    tmp_index  text,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_key   text,
    rows_done  bigint NOT NULL DEFAULT 0,
    rows_total bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One reindex per table at a time, across hosts and through any pooler: the running reindex holds
-- its table's row and renews `expires_at` while it runs; a row past its expiry belongs to a reindex
-- that died, and the next one takes it over. (A session advisory lock would need one server session
-- from lock to unlock, which transaction pooling does not give.)
CREATE TABLE workerpool_reindex_leases (
    table_name text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);


-- ---------------------------------------------------------------------------------------------
-- Monitoring and housekeeping.
-- ---------------------------------------------------------------------------------------------

-- Nothing left to do: no key pending or being processed, in the queue or in the inbox
-- (`run --drain` and the demo stop on it).
CREATE FUNCTION algolia_sync_idle() RETURNS boolean
LANGUAGE sql STABLE
SET search_path FROM CURRENT AS $$
    SELECT NOT EXISTS (SELECT 1 FROM algolia_sync_queue WHERE status IN ('pending', 'processing'))
       AND NOT EXISTS (SELECT 1 FROM algolia_sync_inbox);
$$;

-- Status counts per table and index (the seed's `SELECT * FROM algolia_sync_stats`); keys waiting
-- in the inbox count as pending. The log's calls are unnested for the two arrays counted, not through
-- the view algolia_sync_log, which unnests every array (several times the cost per record).
CREATE VIEW algolia_sync_stats AS
SELECT c.table_name,
       c.index_name,
       count(q.id) FILTER (WHERE q.status = 'pending') + coalesce(i.keys, 0) AS pending,
       count(q.id) FILTER (WHERE q.status = 'processing') AS processing,
       count(q.id) FILTER (WHERE q.status = 'failed')     AS failed,
       (SELECT count(*) FROM algolia_sync_log_batches l, unnest(l.table_names, l.statuses) AS r(table_name, status)
         WHERE r.table_name = c.table_name AND r.status = 'success'
           AND l.synced_at > now() - interval '1 hour')   AS completed_last_hour,
       least(min(q.created_at) FILTER (WHERE q.status = 'pending'), i.oldest) AS oldest_pending_at,
       extract(epoch FROM now() - least(min(q.created_at) FILTER (WHERE q.status = 'pending'), i.oldest))::double precision
                                                          AS oldest_pending_age_s
  FROM algolia_index_config c
  LEFT JOIN algolia_sync_queue q ON q.table_name = c.table_name
  LEFT JOIN LATERAL (SELECT sum(x.keys) AS keys, min(x.created_at) AS oldest
                       FROM algolia_sync_inbox x WHERE x.table_name = c.table_name) i ON true
 GROUP BY c.table_name, c.index_name, i.keys, i.oldest;

-- Housekeeping: delete log rows (whole calls, by their synced_at), and workers not heard from, older
-- than `days`; returns the number of log rows (records) deleted.
CREATE FUNCTION cleanup_old_sync_records(days integer DEFAULT 7) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    n integer;
BEGIN
    IF days IS NULL OR days < 0 THEN
        RAISE EXCEPTION 'cleanup_old_sync_records: days must be 0 or more, got %', days;
    END IF;
    WITH gone AS (
        DELETE FROM algolia_sync_log_batches WHERE synced_at < now() - make_interval(days => days)
        RETURNING cardinality(table_names) AS records
    )
    SELECT coalesce(sum(records), 0) INTO n FROM gone;
    DELETE FROM algolia_sync_workers WHERE heartbeat_at < now() - make_interval(days => days);
    RETURN n;
END;
$$;


-- ---------------------------------------------------------------------------------------------
-- Roles and privileges (docs/roles.md): what the roles that write watched tables, the pool's role
-- and workerpool's own functions may do.
-- ---------------------------------------------------------------------------------------------

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
                        workerpool_reindex_progress, workerpool_reindex_leases TO %s', worker);
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


-- ---------------------------------------------------------------------------------------------
-- Following DDL: event triggers keep captures working through ALTER TABLE and new partitions.
-- ---------------------------------------------------------------------------------------------

-- After an ALTER TABLE on a watched table (a rename of the table, its key or a compared column, a
-- change of the key's type): regenerate its capture function under the current names, so that the
-- application's next write does not fail. A dropped key column detaches the capture triggers and
-- disables the registration with a reason (`workerpool watch` again repairs it). Whatever goes
-- wrong in here is a WARNING, never an error: the user's DDL must not fail because of us.
CREATE FUNCTION algolia_sync_follow_ddl() RETURNS event_trigger
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

-- A partition created or attached under a watched table gets its capture triggers at once.
CREATE FUNCTION algolia_sync_follow_partitions() RETURNS event_trigger
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
        CREATE EVENT TRIGGER algolia_sync_follow_ddl ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION algolia_sync_follow_ddl();
        CREATE EVENT TRIGGER algolia_sync_follow_partitions ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE') EXECUTE FUNCTION algolia_sync_follow_partitions();
    ELSE
        RAISE NOTICE 'workerpool: not a superuser, so DDL on watched tables is not followed automatically';
    END IF;
END;
$$;

SELECT algolia_sync_pin_search_paths();
