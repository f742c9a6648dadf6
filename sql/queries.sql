-- Every statement workerpool runs, by name (workerpool/db/queries.py loads them once).
-- `-- name: x` starts a block; the comment lines after it describe it. Parameters are psycopg's
-- (%s, %(name)s); a block with {placeholders} is a psycopg.sql template whose caller fills in
-- identifiers. Functions, tables and views are in schema.sql.


-- ===============================================================================================
-- Capture: resolving tables, registering them, attaching and detaching triggers (capture/).
-- ===============================================================================================

-- name: resolve_relation
-- The relation a name resolves to: its oid, its regclass text (quoted where needed) and relkind.
SELECT c.oid, c.oid::regclass::text, c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s);

-- name: load_watched
-- Every enabled registration, with the table, key and source view as they are called now (through their oids).
-- The key's type is its base type: keys are cast to it to be read, and a cast to a domain would run
-- the domain's CHECK, which is the table owner's code, as the pool's role.
SELECT c.table_name, c.index_name, coalesce(a.attname, c.key_column),
       coalesce(format_type(coalesce(nullif(kt.typbasetype, 0), a.atttypid),
                            CASE WHEN kt.typtype = 'd' THEN kt.typtypmod ELSE a.atttypmod END), c.key_type),
       CASE WHEN c.source IS NULL THEN c.source_view
            ELSE coalesce(sv.oid::regclass::text, quote_ident('dropped view ' || c.source_view)) END,
       c.attributes, c.transform,
       CASE WHEN c.relation IS NULL THEN c.table_name
            ELSE coalesce(t.oid::regclass::text, quote_ident('dropped table ' || c.table_name)) END,
       coalesce(parts.names, c.key_columns), parts.types
  FROM algolia_index_config c
  LEFT JOIN pg_class t ON t.oid = c.relation
  LEFT JOIN pg_class sv ON sv.oid = c.source
  LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = c.key_attnum AND NOT a.attisdropped
  LEFT JOIN pg_type kt ON kt.oid = a.atttypid
  -- A key of several columns: their names and base types, in key order.
  LEFT JOIN LATERAL (
        SELECT array_agg(pa.attname ORDER BY x.i) AS names,
               array_agg(format_type(coalesce(nullif(pt.typbasetype, 0), pa.atttypid),
                                     CASE WHEN pt.typtype = 'd' THEN pt.typtypmod ELSE pa.atttypmod END)
                         ORDER BY x.i) AS types
          FROM unnest(c.key_attnums) WITH ORDINALITY AS x(attnum, i)
          JOIN pg_attribute pa ON pa.attrelid = t.oid AND pa.attnum = x.attnum AND NOT pa.attisdropped
          JOIN pg_type pt ON pt.oid = pa.atttypid
        HAVING count(*) > 0) parts ON c.key_attnums IS NOT NULL
 WHERE c.enabled;

-- name: key_type
-- A column's type, its base type (through domains), whether that is an enum, and whether a cast
-- between it and a text type runs a function (one that the type's owner added).
SELECT format_type(a.atttypid, a.atttypmod),
       format_type(coalesce(nullif(t.typbasetype, 0), t.oid), NULL),
       b.typtype = 'e',
       EXISTS (SELECT 1 FROM pg_cast k
                WHERE k.castfunc <> 0
                  AND ((k.castsource = b.oid AND k.casttarget IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype))
                    OR (k.casttarget = b.oid AND k.castsource IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype, 'unknown'::regtype))))
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
  JOIN pg_type b ON b.oid = coalesce(nullif(t.typbasetype, 0), t.oid)
 WHERE a.attrelid = %s AND a.attname = %s AND NOT a.attisdropped;

-- name: key_nullable
-- Whether a column is declared NOT NULL.
SELECT attnotnull FROM pg_attribute WHERE attrelid = %s AND attname = %s;

-- name: table_columns
-- A relation's columns and their types, in order.
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum;

-- name: primary_key
-- A table's primary-key columns, in key order.
SELECT a.attname FROM pg_index i
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
 WHERE i.indrelid = %s AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum);

-- name: is_unique
-- Whether a unique index (or the primary key), neither partial nor on expressions, has exactly these
-- key columns (in any order).
SELECT EXISTS (SELECT 1 FROM pg_index i
               WHERE i.indrelid = %(oid)s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
                 AND i.indnkeyatts = cardinality(%(columns)s::text[])
                 AND (SELECT array_agg(a.attname::text COLLATE "C" ORDER BY a.attname::text COLLATE "C")
                        FROM unnest(i.indkey::smallint[]) WITH ORDINALITY AS k(attnum, pos)
                        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                       WHERE k.pos <= i.indnkeyatts)
                   = (SELECT array_agg(c COLLATE "C" ORDER BY c COLLATE "C") FROM unnest(%(columns)s::text[]) AS c));

-- name: register
-- Insert or update a registration, with the oids and attnums that follow renames.
INSERT INTO algolia_index_config (table_name, index_name, key_column, key_type, source_view,
                                 attributes, transform, relation, source, key_attnum,
                                 attribute_attnums, key_columns, key_attnums)
VALUES (%(table)s, %(index)s, array_to_string(%(keys)s::text[], ','), %(ktype)s, %(source)s::text, %(attributes)s,
        %(transform)s, %(oid)s, to_regclass(%(source)s),
        (SELECT attnum FROM pg_attribute WHERE attrelid = %(oid)s AND attname = (%(keys)s::text[])[1]),
        CASE WHEN %(attributes)s::text[] IS NOT NULL AND %(source)s::text IS NULL THEN
            ARRAY(SELECT a.attnum FROM unnest(%(attributes)s::text[]) WITH ORDINALITY AS x(name, i)
                    JOIN pg_attribute a ON a.attrelid = %(oid)s AND a.attname = x.name
                   ORDER BY x.i) END,
        CASE WHEN cardinality(%(keys)s::text[]) > 1 THEN %(keys)s::text[] END,
        CASE WHEN cardinality(%(keys)s::text[]) > 1 THEN
            ARRAY(SELECT a.attnum FROM unnest(%(keys)s::text[]) WITH ORDINALITY AS x(name, i)
                    JOIN pg_attribute a ON a.attrelid = %(oid)s AND a.attname = x.name
                   ORDER BY x.i) END)
ON CONFLICT (table_name) DO UPDATE
   SET index_name = EXCLUDED.index_name, key_column = EXCLUDED.key_column,
       key_type = EXCLUDED.key_type, source_view = EXCLUDED.source_view,
       attributes = EXCLUDED.attributes, transform = EXCLUDED.transform,
       relation = EXCLUDED.relation, source = EXCLUDED.source, key_attnum = EXCLUDED.key_attnum,
       attribute_attnums = EXCLUDED.attribute_attnums, key_columns = EXCLUDED.key_columns,
       key_attnums = EXCLUDED.key_attnums,
       enabled = true, disabled_reason = NULL, updated_at = now();

-- name: capture_function_name
-- The capture function's name for a registration (schema.sql: algolia_sync_capture_name).
SELECT algolia_sync_capture_name(%s);

-- name: create_capture
-- Generate (or regenerate) a table's capture function; returns its qualified name.
SELECT algolia_sync_create_capture(%s, %s, %s, %s, %s);

-- name: attach_capture
-- Attach the capture triggers to a table and its partitions.
SELECT algolia_sync_attach(%s, %s);

-- name: detach_capture
-- Detach the capture triggers from a table and its partitions.
SELECT algolia_sync_detach(%s::oid::regclass);

-- name: drop_capture_function
-- Template: {} is the capture function.
DROP FUNCTION IF EXISTS {}();

-- name: renamed_registration
-- A registration of this table under another (older) name.
SELECT table_name FROM algolia_index_config WHERE relation = %s::oid::regclass AND table_name <> %s;

-- name: drop_superseded_pending
-- Pending rows under the old name whose key is also pending under the new one.
DELETE FROM algolia_sync_queue q WHERE q.table_name = %(old)s AND q.status = 'pending' AND EXISTS (SELECT 1 FROM algolia_sync_queue p WHERE p.table_name = %(new)s AND p.record_id = q.record_id AND p.status = 'pending');

-- name: rename_queue_rows
UPDATE algolia_sync_queue SET table_name = %(new)s WHERE table_name = %(old)s;

-- name: rename_inbox_rows
UPDATE algolia_sync_inbox SET table_name = %(new)s WHERE table_name = %(old)s;

-- name: delete_registration_by_old_name
DELETE FROM algolia_index_config WHERE table_name = %(old)s;

-- name: watched_indices
-- The indices of the enabled registrations (without ALGOLIA_INDEX_PREFIX).
SELECT DISTINCT index_name FROM algolia_index_config WHERE enabled ORDER BY 1;

-- name: registrations_to_refresh
-- What `watch` stored for every enabled registration whose table exists (to regenerate its triggers).
-- Related links by their current names (table, foreign key, referenced column), through the oid
-- and attnums stored with them.
SELECT c.table_name, c.index_name, coalesce(c.key_columns, ARRAY[c.key_column]),
       coalesce((SELECT sv.oid::regclass::text FROM pg_class sv WHERE sv.oid = c.source), c.source_view),
       c.attributes, c.transform,
       array(SELECT ARRAY[coalesce(rt.oid::regclass::text, r.related_table), coalesce(fa.names, r.fk_column),
                          coalesce(ra.names, r.ref_column)]
               FROM algolia_index_related r
               LEFT JOIN pg_class rt ON rt.oid = r.relation
               LEFT JOIN LATERAL (
                     SELECT string_agg(a.attname, ',' ORDER BY x.i) AS names
                       FROM unnest(coalesce(r.fk_attnums, ARRAY[r.fk_attnum])) WITH ORDINALITY AS x(attnum, i)
                       JOIN pg_attribute a ON a.attrelid = c.relation AND a.attnum = x.attnum AND NOT a.attisdropped
                     HAVING count(*) = cardinality(coalesce(r.fk_attnums, ARRAY[r.fk_attnum]))) fa ON true
               LEFT JOIN LATERAL (
                     SELECT string_agg(a.attname, ',' ORDER BY x.i) AS names
                       FROM unnest(coalesce(r.ref_attnums, ARRAY[r.ref_attnum])) WITH ORDINALITY AS x(attnum, i)
                       JOIN pg_attribute a ON a.attrelid = r.relation AND a.attnum = x.attnum AND NOT a.attisdropped
                     HAVING count(*) = cardinality(coalesce(r.ref_attnums, ARRAY[r.ref_attnum]))) ra ON true
              WHERE r.table_name = c.table_name),
       coalesce(t.oid::regclass::text, c.table_name)
  FROM algolia_index_config c
  LEFT JOIN pg_class t ON t.oid = c.relation
 WHERE c.enabled AND (t.oid IS NOT NULL OR to_regclass(c.table_name) IS NOT NULL);

-- name: set_transform
UPDATE algolia_index_config SET transform = %s WHERE table_name = %s;

-- name: registrations_by_relation
-- Every registration and its table's oid (NULL when the table is gone).
SELECT c.table_name, t.oid FROM algolia_index_config c LEFT JOIN pg_class t ON t.oid = c.relation;

-- name: regclass_oid
SELECT to_regclass(%s)::oid;

-- name: delete_registration
DELETE FROM algolia_index_config WHERE table_name = %s;

-- name: delete_unfailed_queue_rows
DELETE FROM algolia_sync_queue WHERE table_name = %s AND status <> 'failed';

-- name: delete_inbox_rows
DELETE FROM algolia_sync_inbox WHERE table_name = %s;

-- name: unindexed_related
-- --related links whose foreign-key column (the first of several) no valid index leads with, and the
-- foreign key's columns quoted for the CREATE INDEX to suggest.
SELECT r.related_table, r.fk_column,
       (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY x.i)
          FROM unnest(coalesce(r.fk_attnums, ARRAY[r.fk_attnum])) WITH ORDINALITY AS x(attnum, i)
          JOIN pg_attribute a ON a.attrelid = %(oid)s AND a.attnum = x.attnum)
  FROM algolia_index_related r
 WHERE r.table_name = %(table)s
   AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = %(oid)s AND i.indisvalid AND i.indkey[0] = r.fk_attnum)
 ORDER BY 1, 2;

-- name: insert_related
-- A link, with the oid and attnums that find it again after a rename; returns what the related
-- triggers take as arguments (schema.sql: algolia_sync_enqueue_related).
-- %(fk)s and %(ref)s are lists of columns (one each, or as many for a foreign key of several).
INSERT INTO algolia_index_related (table_name, related_table, fk_column, ref_column, relation, fk_attnum, ref_attnum,
                                   fk_attnums, ref_attnums)
SELECT %(table)s::text, %(related)s::text, array_to_string(%(fk)s::text[], ','), array_to_string(%(ref)s::text[], ','),
       to_regclass(%(related)s::text), l.fks[1], l.refs[1],
       CASE WHEN cardinality(l.fks) > 1 THEN l.fks END, CASE WHEN cardinality(l.refs) > 1 THEN l.refs END
  FROM (SELECT ARRAY(SELECT a.attnum FROM unnest(%(fk)s::text[]) WITH ORDINALITY AS x(name, i)
                       JOIN pg_attribute a ON a.attrelid = %(oid)s AND a.attname = x.name AND NOT a.attisdropped
                      ORDER BY x.i) AS fks,
               ARRAY(SELECT a.attnum FROM unnest(%(ref)s::text[]) WITH ORDINALITY AS x(name, i)
                       JOIN pg_attribute a ON a.attrelid = to_regclass(%(related)s::text) AND a.attname = x.name
                        AND NOT a.attisdropped
                      ORDER BY x.i) AS refs) l
RETURNING coalesce(fk_attnums::text, fk_attnum::text), coalesce(ref_attnums::text, ref_attnum::text);

-- name: create_related_triggers
-- Template: the four statement-level triggers on a related table that re-enqueue the watched rows
-- pointing at a changed row. {related} is the related table; the rest are literals: the
-- registration's name and the attnums of the foreign key and of the referenced column.
CREATE TRIGGER {insert} AFTER INSERT ON {related} REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION algolia_sync_enqueue_related({table}, {fk}, {ref});
CREATE TRIGGER {update} AFTER UPDATE ON {related} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION algolia_sync_enqueue_related({table}, {fk}, {ref});
CREATE TRIGGER {delete} AFTER DELETE ON {related} REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION algolia_sync_enqueue_related({table}, {fk}, {ref});
CREATE TRIGGER {truncate} BEFORE TRUNCATE ON {related}
FOR EACH STATEMENT EXECUTE FUNCTION algolia_sync_enqueue_related({table}, {fk}, {ref});

-- name: delete_related
-- Forget a registration's related links; returns them, so their triggers can be dropped.
-- The related table as it is called now (its oid), or the name it was linked under.
DELETE FROM algolia_index_related r WHERE r.table_name = %s
RETURNING coalesce((SELECT c.oid::regclass::text FROM pg_class c WHERE c.oid = r.relation), r.related_table), r.fk_column;

-- name: relation_exists
SELECT to_regclass(%s) IS NOT NULL;

-- name: drop_trigger
-- Template: {} the trigger, {} its table.
DROP TRIGGER IF EXISTS {} ON {};


-- ===============================================================================================
-- The queue, as a worker uses it (runtime/queue.py): each calls a function of schema.sql where one exists.
-- ===============================================================================================

-- name: claim_batch
-- Claim up to a batch of due rows under a fresh token (schema.sql: get_pending_algolia_syncs).
SELECT id, table_name, record_id, operation, attempts, created_at FROM get_pending_algolia_syncs(%s, %s, %s, %s);

-- name: enqueue
-- Queue keys of a watched table (a key already pending is left alone); runs in the caller's
-- transaction, with `notify`.
INSERT INTO algolia_sync_queue (table_name, record_id, operation)
SELECT %s, k, %s FROM unnest(%s::text[]) AS k
ON CONFLICT (table_name, record_id) WHERE status = 'pending' DO NOTHING;

-- name: spill
-- Move inbox keys into the queue; gives up on a lock wait (lock_timeout).
SELECT algolia_sync_spill(%s);

-- name: idle
-- Nothing pending or being processed, in the queue or the inbox.
SELECT algolia_sync_idle();

-- name: extend_lease
-- Push a live claim's lease forward by a lease in ms (as get_pending_algolia_syncs takes it). An
-- expired lease is not revived: another worker may already hold a newer change to one of its keys.
UPDATE algolia_sync_queue
   SET locked_until = now() + make_interval(secs => %s::integer / 1000.0)
 WHERE claim_token = %s AND status = 'processing' AND locked_until >= now();

-- name: ack
-- Acknowledge a claim's sent rows, in id order, split into the hash groups (first hashes, other sent
-- records, deleted records); array literals, parsed by the server, but for the hashes and shapes:
-- binary bytea[] (runtime/queue.py bytea_array).
SELECT algolia_sync_ack(ids => %s::bigint[], token => %s, actions => %s::text[], index_names => %s::text[],
                        new_ids => %s::bigint[], new_indexes => %s::text[], new_records => %s::text[],
                        new_hashes => %s::bytea[], new_shapes => %s::bytea[],
                        sent_ids => %s::bigint[], sent_indexes => %s::text[], sent_records => %s::text[],
                        sent_hashes => %s::bytea[], sent_shapes => %s::bytea[],
                        gone_ids => %s::bigint[], gone_indexes => %s::text[], gone_records => %s::text[]);

-- name: release
-- Give rows back for a retry, or fail them.
SELECT algolia_sync_release(%s, %s, %s, %s, %s, %s, %s);

-- name: recover_expired
-- Return rows whose lease expired to the queue.
SELECT algolia_sync_recover_expired(%s);

-- name: heartbeat
-- A worker's heartbeat and counters.
INSERT INTO algolia_sync_workers (worker_id, host, pid, batches, records)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (worker_id) DO UPDATE
   SET heartbeat_at = now(), pid = EXCLUDED.pid, batches = EXCLUDED.batches,
       records = EXCLUDED.records;

-- name: forget_worker
-- A worker that stopped.
DELETE FROM algolia_sync_workers WHERE worker_id = %s;


-- ===============================================================================================
-- The worker: its start-up check, LISTEN, reading rows, pruning the log (runtime/).
-- ===============================================================================================

-- name: schema_installed
-- Whether the schema is there at all (the worker waits for `migrate`).
SELECT to_regproc('get_pending_algolia_syncs') IS NOT NULL;

-- name: listen
-- Template: {} is the NOTIFY channel (queries.NOTIFY_CHANNEL).
LISTEN {};

-- name: load_rows
-- Template: the current rows of a batch's keys in one table, with a record version and the last-sent
-- hashes. Parameters: keys (a text[] literal) and index. Driven from the key list, and the last-sent
-- hash looked up per key in a LATERAL subquery with LIMIT, which the planner can neither flatten into
-- a join nor materialize: one probe per key in any plan. A plain LEFT JOIN lets a generic plan made
-- while the hash table was small materialize all of the index's hashes and compare each with every
-- key, which is quadratic over a drain (tests/acceptance/test_record_shaping.py checks the plan on
-- stale statistics).
SELECT k.oid AS {oid}, (SELECT nextval('algolia_sync_version_seq')) AS {version}, h.hash AS {hash}, h.shape AS {shape}, s.* FROM unnest(%(keys)s::text[]) AS k(oid) JOIN {source} s ON {match} LEFT JOIN LATERAL (SELECT l.hash, l.shape FROM algolia_sync_hashes l WHERE l.index_name = %(index)s AND l.object_id = k.oid LIMIT 1) h ON true;

-- name: load_rows_one_by_one
-- Template: load_rows, probing the source once per key (a LATERAL subquery that OFFSET 0 keeps from
-- being flattened into a join): a source view's expressions are evaluated for the keys asked for
-- alone. load_rows may evaluate them for every row of the table (a hash join over a scan of the view,
-- always so in a generic plan), so one row whose expression raises (a volatile function in a
-- --source view) failed every key, however far the batch was halved. Used once a batch has failed
-- for a row's sake, to find that row: a source without an index on its key costs a scan per key then.
SELECT k.oid AS {oid}, (SELECT nextval('algolia_sync_version_seq')) AS {version}, h.hash AS {hash}, h.shape AS {shape}, s.* FROM unnest(%(keys)s::text[]) AS k(oid) CROSS JOIN LATERAL (SELECT r.* FROM {source} r WHERE {match_r} OFFSET 0) s LEFT JOIN LATERAL (SELECT l.hash, l.shape FROM algolia_sync_hashes l WHERE l.index_name = %(index)s AND l.object_id = k.oid LIMIT 1) h ON true;

-- name: retention_lock
-- The retention lock, for this transaction only; false when another worker holds it.
SELECT pg_try_advisory_xact_lock(%s);

-- name: record_published
-- When Algolia published claims' tasks (runtime/searchable.py): on the claims' log rows of the last
-- ten minutes (through the synced_at index), the latest time wins. Returns the claims marked.
UPDATE algolia_sync_log_batches b SET published_at = greatest(b.published_at, u.at)
  FROM unnest(%s::uuid[], %s::timestamptz[]) AS u(token, at)
 WHERE b.synced_at > now() - interval '10 minutes' AND b.claim_token = u.token
RETURNING b.claim_token;

-- name: prune_log
-- Delete up to a number of the oldest logged calls older than the cutoff, through the synced_at
-- index; returns how many calls and how many log rows (records) that was.
WITH gone AS (
    DELETE FROM algolia_sync_log_batches
     WHERE id = ANY(ARRAY(SELECT b.id FROM algolia_sync_log_batches b WHERE b.synced_at < %s
                           ORDER BY b.synced_at LIMIT %s))
    RETURNING cardinality(table_names) AS records
)
SELECT count(*), coalesce(sum(records), 0)::bigint FROM gone;


-- ===============================================================================================
-- Operator commands: migrate, retry-failed, cleanup, unwatch, reindex, verify, stats, settings (ops/, cli/).
-- ===============================================================================================

-- name: migration_lock
-- Serializes `migrate` across hosts, until the end of the run's transaction (no session lock: a
-- pooler may give the unlock another server session).
SELECT pg_advisory_xact_lock(%s);

-- name: create_migrations_table
-- Which migrations a database has, with their checksums.
CREATE TABLE IF NOT EXISTS workerpool_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());

-- name: migrations_table_exists
SELECT to_regclass('workerpool_migrations') IS NOT NULL;

-- name: applied_migrations
SELECT version, checksum FROM workerpool_migrations;

-- name: record_migration
-- A migration applied (or, on a new install, included in schema.sql).
INSERT INTO workerpool_migrations (version, name, checksum) VALUES (%s, %s, %s);

-- name: retry_failed
-- `retry-failed`: failed rows back to the queue, for one table and/or some ids.
SELECT algolia_sync_retry_failed(%s, %s);

-- name: over_long_failed
-- `retry-failed`: the failed rows it leaves, those of keys too long for an objectID (they never sync).
SELECT count(*) FROM algolia_sync_queue q
 WHERE q.status = 'failed' AND algolia_sync_key_too_long(q.record_id, q.last_error)
   AND (%(t)s::text IS NULL OR q.table_name = %(t)s) AND (%(ids)s::bigint[] IS NULL OR q.id = ANY(%(ids)s));

-- name: cleanup_old_sync_records
SELECT cleanup_old_sync_records(%s);

-- name: lock_table_for_unwatch
-- Template: {} is the watched table. Writers finish first and wait for `unwatch`.
LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE;

-- name: notify
-- Wake the workers at commit: the payload names the table.
SELECT pg_notify(algolia_sync_channel(), %s);

-- name: take_reindex_lease
-- One reindex per table: the table's lease, if it is free or expired. Parameters: table, holder,
-- seconds. Returns the holder and expiry now in force (ours when taken).
WITH taken AS (
    INSERT INTO workerpool_reindex_leases AS l (table_name, holder, expires_at)
    VALUES (%(t)s, %(holder)s, now() + make_interval(secs => %(secs)s))
    ON CONFLICT (table_name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
     WHERE l.expires_at < now() OR l.holder = EXCLUDED.holder
    RETURNING holder, expires_at)
SELECT holder, expires_at FROM taken
 UNION ALL
SELECT holder, expires_at FROM workerpool_reindex_leases WHERE table_name = %(t)s AND NOT EXISTS (SELECT FROM taken);

-- name: renew_reindex_lease
-- Parameters: seconds, table, holder. No row: the lease is no longer ours.
UPDATE workerpool_reindex_leases SET expires_at = now() + make_interval(secs => %s)
 WHERE table_name = %s AND holder = %s RETURNING expires_at;

-- name: drop_reindex_lease
DELETE FROM workerpool_reindex_leases WHERE table_name = %s AND holder = %s;

-- name: load_reindex_progress
SELECT table_name, mode, tmp_index, started_at, last_key, rows_done FROM workerpool_reindex_progress WHERE table_name = %s;

-- name: start_reindex_progress
INSERT INTO workerpool_reindex_progress (table_name, mode, tmp_index, rows_total)
 VALUES (%s, %s, %s, %s)
 ON CONFLICT (table_name) DO UPDATE
    SET mode = EXCLUDED.mode, tmp_index = EXCLUDED.tmp_index, started_at = now(),
        last_key = NULL, rows_done = 0, rows_total = EXCLUDED.rows_total, updated_at = now()
 RETURNING table_name, mode, tmp_index, started_at, last_key, rows_done;

-- name: advance_reindex_progress
UPDATE workerpool_reindex_progress SET last_key = %s, rows_done = rows_done + %s, updated_at = now()
  WHERE table_name = %s;

-- name: finish_reindex_progress
DELETE FROM workerpool_reindex_progress WHERE table_name = %s;

-- name: keys_to_reenqueue
-- After an atomic reindex's move: every key synced since it started (with a margin), held right
-- now, or refused by the index (the caller queues them again).
SELECT record_id FROM algolia_sync_log
 WHERE table_name = %(t)s AND synced_at >= %(t0)s - make_interval(secs => %(margin)s)
UNION
SELECT record_id FROM algolia_sync_queue WHERE table_name = %(t)s AND status = 'processing'
UNION
SELECT unnest(%(extra)s::text[]);

-- name: first_keys
-- Template: the first keys of a table as text, in key order ({k} the key's text, {present} that the
-- row has a key, {order} the key columns, {t} the table; capture/keys.py). Qualified (s.key): a bare
-- ORDER BY name would sort by the text output column, not the key.
SELECT {k} FROM {t} s WHERE {present} ORDER BY {order} LIMIT %(size)s;

-- name: keys_after
-- Template: the next keys after one ({after}: the row comes after the key text %(last)s).
SELECT {k} FROM {t} s WHERE {after} ORDER BY {order} LIMIT %(size)s;

-- name: count_keyed_rows
-- Template: the rows of a table that have a key.
SELECT count(*) FROM {t} s WHERE {present};

-- name: stats_tables
-- `workerpool stats`: per table. The log's calls (algolia_sync_log_batches) are unnested for the
-- arrays counted only: the view algolia_sync_log unnests all of them.
SELECT s.table_name, s.index_name, s.pending, s.processing, s.failed,
       s.completed_last_hour, round(coalesce(s.oldest_pending_age_s, 0)::numeric, 3)::float AS oldest_pending_age_s,
       (SELECT count(*) FROM algolia_sync_log_batches l, unnest(l.table_names, l.statuses) AS r(table_name, status)
         WHERE r.table_name = s.table_name AND r.status = 'success'
           AND l.synced_at > now() - interval '1 minute')::float / 60
           AS records_per_s_last_minute,
       (SELECT CASE WHEN count(*) = 0 THEN NULL
                    ELSE round(100.0 * count(*) FILTER (WHERE r.status = 'success') / count(*), 2)::float END
          FROM algolia_sync_log_batches l, unnest(l.table_names, l.statuses) AS r(table_name, status)
         WHERE r.table_name = s.table_name
           AND l.synced_at > now() - interval '1 hour') AS success_rate_pct
  FROM algolia_sync_stats s ORDER BY s.table_name;

-- name: stats_workers
-- `workerpool stats`: per live worker.
SELECT w.worker_id, w.host, w.pid,
       w.batches + coalesce(since.batches, 0) AS batches,
       w.records + coalesce(since.records, 0) AS records,
       round(extract(epoch FROM now() - w.heartbeat_at)::numeric, 1)::float AS heartbeat_age_s
  FROM algolia_sync_workers w
  LEFT JOIN LATERAL (
       SELECT count(DISTINCT l.claim_token) AS batches,
              count(*) FILTER (WHERE r.status IN ('success', 'skipped')) AS records
         FROM algolia_sync_log_batches l, unnest(l.statuses) AS r(status)
        WHERE l.synced_at > w.heartbeat_at AND l.claimed_by = w.worker_id) since ON true
 WHERE w.heartbeat_at > now() - interval '30 seconds'
 ORDER BY w.host, w.pid;

-- name: tables_with_queue_rows
-- Whether any of these names has queue rows.
SELECT table_name FROM algolia_sync_queue WHERE table_name = ANY(%s) LIMIT 1;

-- name: backlog
-- A table's keys waiting (queue and inbox, each key once) and its failed rows.
SELECT (SELECT count(*) FROM (
           SELECT record_id FROM algolia_sync_queue
            WHERE table_name = %(t)s AND status IN ('pending', 'processing')
           UNION
           SELECT unnest(record_ids) FROM algolia_sync_inbox WHERE table_name = %(t)s) k),
       (SELECT count(*) FROM algolia_sync_queue WHERE table_name = %(t)s AND status = 'failed');

-- name: index_settings
SELECT index_name, settings FROM algolia_index_config WHERE settings IS NOT NULL;

-- name: database_now
SELECT now();

-- name: create_verify_scratch
-- Template: verify's scratch tables (temporary). COLLATE "C", inherited by the drift table: code
-- point order for the samples and the repair's keyset walk.
CREATE TEMPORARY TABLE {index_hashes} (k text COLLATE "C" NOT NULL, hash bytea NOT NULL); CREATE TEMPORARY TABLE {table_hashes} (k text COLLATE "C" NOT NULL, hash bytea);

-- name: drop_verify_scratch
DROP TABLE IF EXISTS {index_hashes}, {table_hashes}, {drift};

-- name: copy_hashes
-- Template: {} is a scratch table.
COPY {} (k, hash) FROM STDIN;

-- name: analyze_verify_hashes
ANALYZE {index_hashes}; ANALYZE {table_hashes};

-- name: create_drift
-- Template: every key whose index record is missing, stale or extra.
CREATE TEMPORARY TABLE {drift} AS
SELECT t.k, CASE WHEN i.k IS NULL THEN 'missing' ELSE 'stale' END AS kind
  FROM {table_hashes} t LEFT JOIN {index_hashes} i ON i.k = t.k
 WHERE t.hash IS NOT NULL AND i.hash IS DISTINCT FROM t.hash
UNION ALL
SELECT i.k, 'extra' FROM {index_hashes} i
 WHERE NOT EXISTS (SELECT 1 FROM {table_hashes} t WHERE t.k = i.k);

-- name: drop_in_flight_drift
-- Template: leave out the keys in flight (pending, processing, in the inbox, or synced since verify started).
DELETE FROM {drift} d USING (
SELECT record_id AS k FROM algolia_sync_queue
WHERE table_name = %(t)s AND status IN ('pending', 'processing')
UNION SELECT unnest(record_ids) FROM algolia_sync_inbox WHERE table_name = %(t)s
UNION SELECT record_id FROM algolia_sync_log WHERE table_name = %(t)s AND synced_at >= %(since)s
) moving
WHERE d.k = moving.k;

-- name: index_drift
CREATE INDEX ON {drift} (kind, k); ANALYZE {drift};

-- name: count_drift
SELECT kind, count(*) FROM {drift} GROUP BY kind;

-- name: sample_drift
-- Template: a sample of one kind of drift, in natural order: integers by value first, then the rest
-- by code point.
SELECT k FROM {drift} WHERE kind = %s ORDER BY (k !~ '^-?[0-9]+$'), CASE WHEN k ~ '^-?[0-9]+$' THEN k::numeric END, k LIMIT %s;

-- name: drift_after
-- Template: the keys of one kind of drift after one (keyset).
SELECT k FROM {drift} WHERE kind = %s AND k > %s ORDER BY k LIMIT %s;

-- name: castable_keys
-- Template: the keys that are valid values of the key ({}: each key column's value of k is not NULL,
-- which casts them; capture/keys.py).
SELECT k.k FROM unnest(%s::text[]) AS k(k) WHERE {};

-- name: cast_key
-- Template: whether one key (k) is a valid value of the key ({}).
SELECT {} FROM (SELECT %s::text AS k) k;

-- name: mark_impossible_drift
-- Template: extra index records whose objectID can never be a row.
UPDATE {drift} SET kind = 'impossible' WHERE kind = 'extra' AND k = ANY(%s);


-- ===============================================================================================
-- /healthz, vacuum health and the dashboard (observability/).
-- ===============================================================================================

-- name: health_backlog
-- Keys waiting (queue pending rows and inbox keys) and the age of the oldest: due, being processed,
-- or backing off after a failed attempt or an outage (a last_error, its attempt not spent).
SELECT sum(n), extract(epoch FROM now() - min(since))::float8
  FROM (SELECT count(*) AS n, min(created_at) AS since FROM algolia_sync_queue
         WHERE status = 'processing'
            OR (status = 'pending' AND (next_attempt_at <= now() OR attempts > 0 OR last_error IS NOT NULL))
        UNION ALL
        SELECT sum(keys), min(created_at) FROM algolia_sync_inbox) w;

-- name: health_queue_depth
-- Queue rows per table and status; inbox keys as status "inbox".
SELECT table_name, status, count(*) FROM algolia_sync_queue GROUP BY 1, 2
UNION ALL
SELECT table_name, 'inbox', sum(keys) FROM algolia_sync_inbox GROUP BY 1
ORDER BY 1, 2;

-- name: health_oldest_pending
-- The age of the oldest waiting key, per table.
SELECT table_name, extract(epoch FROM now() - min(since))::float8
  FROM (SELECT table_name, created_at AS since FROM algolia_sync_queue WHERE status = 'pending'
        UNION ALL SELECT table_name, created_at FROM algolia_sync_inbox) w
 GROUP BY 1 ORDER BY 1;

-- name: vacuum_tables
-- The hot tables' size, dead tuples and last vacuums.
SELECT current_setting('autovacuum')::boolean, c.relname, pg_total_relation_size(c.oid),
       coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0), s.last_vacuum, s.last_autovacuum,
       coalesce(s.vacuum_count, 0), coalesce(s.autovacuum_count, 0)
  FROM unnest(%s::text[]) WITH ORDINALITY AS h(name, n)
  JOIN pg_class c ON c.oid = to_regclass(h.name)
  LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
 ORDER BY h.n;

-- name: vacuum_horizon
-- What holds the xmin horizon back: transactions, walsenders, prepared transactions, replication
-- slots. Holders at least a second old, oldest (in transactions) first. Sessions of other databases
-- do not hold this database's tables back (Postgres 14+), so they are left out; this query's own
-- session holds a snapshot too and is left out. Never a session's query text: it may hold another
-- application's secrets, and stats output is shared freely.
SELECT 'transaction', greatest(age(a.backend_xid), age(a.backend_xmin)),
       extract(epoch FROM now() - a.xact_start)::float8, true, a.pid, a.state, a.application_name,
       a.usename::text, NULL::text, NULL::text, NULL::boolean
  FROM pg_stat_activity a
 WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
   AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL) AND a.backend_type <> 'walsender'
   AND a.xact_start < now() - interval '1 second'
UNION ALL
SELECT 'walsender', age(a.backend_xmin), NULL, true, a.pid, a.state, a.application_name,
       a.usename::text, NULL, NULL, NULL
  FROM pg_stat_activity a
 WHERE a.backend_type = 'walsender' AND a.backend_xmin IS NOT NULL
UNION ALL
SELECT 'prepared_transaction', age(p.transaction), extract(epoch FROM now() - p.prepared)::float8, true,
       NULL, NULL, NULL, p.owner::text, p.gid, NULL, NULL
  FROM pg_prepared_xacts p
 WHERE p.database = current_database()
UNION ALL
SELECT 'replication_slot', age(coalesce(r.xmin, r.catalog_xmin)), NULL, r.xmin IS NOT NULL, r.active_pid, NULL,
       NULL, NULL, r.slot_name::text, r.slot_type, r.active
  FROM pg_replication_slots r
 WHERE r.xmin IS NOT NULL OR r.catalog_xmin IS NOT NULL
 ORDER BY 2 DESC, 3 DESC NULLS LAST;

-- name: overview_snapshot
-- The dashboard reads everything in one snapshot.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: overview_clock
SELECT extract(epoch FROM now())::float8, extract(epoch FROM date_trunc('minute', now()))::bigint;

-- name: overview_registrations
SELECT table_name, index_name, enabled FROM algolia_index_config ORDER BY table_name;

-- name: overview_queue
SELECT table_name, status, count(*), extract(epoch FROM now() - min(created_at))::float8
  FROM algolia_sync_queue GROUP BY 1, 2
UNION ALL
SELECT table_name, 'inbox', sum(keys), extract(epoch FROM now() - min(created_at))::float8
  FROM algolia_sync_inbox GROUP BY 1;

-- name: overview_minutes
-- The log's calls unnested for the arrays counted only (the view algolia_sync_log unnests all of them).
SELECT r.table_name, extract(epoch FROM date_trunc('minute', l.synced_at))::bigint,
       count(*) FILTER (WHERE r.status = 'success'), count(*) FILTER (WHERE r.status = 'failed')
  FROM algolia_sync_log_batches l, unnest(l.table_names, l.statuses) AS r(table_name, status)
 WHERE l.synced_at >= to_timestamp(%s) AND l.synced_at < to_timestamp(%s)
   AND r.status IN ('success', 'failed')
 GROUP BY 1, 2;

-- name: overview_lag
-- Per table, over its latest successful acknowledgements of the last five minutes: change -> ack
-- (samples, p50, p95, max), then change -> searchable over those of them whose claim a worker
-- followed to publication (samples, p50, p95, max; NULLs when none).
SELECT table_name, count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_s),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY lag_s), max(lag_s),
       count(searchable_s),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY searchable_s),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY searchable_s), max(searchable_s)
  FROM (SELECT r.table_name, extract(epoch FROM l.synced_at - r.enqueued_at)::float8 AS lag_s,
               greatest(0, extract(epoch FROM l.published_at - r.enqueued_at))::float8 AS searchable_s
          FROM algolia_sync_log_batches l,
               unnest(l.table_names, l.statuses, l.enqueued_at) AS r(table_name, status, enqueued_at)
         WHERE l.synced_at > now() - interval '5 minutes' AND r.status = 'success'
           AND r.enqueued_at IS NOT NULL
         ORDER BY l.synced_at DESC LIMIT %s) recent
 GROUP BY 1;

-- name: overview_failed
SELECT t.name, f.id, f.record_id, f.operation, f.attempts, f.last_error,
       extract(epoch FROM f.updated_at)::float8
  FROM unnest(%s::text[]) AS t(name)
 CROSS JOIN LATERAL (SELECT q.id, q.record_id, q.operation, q.attempts, q.last_error, q.updated_at
                       FROM algolia_sync_queue q
                      WHERE q.status = 'failed' AND q.table_name = t.name
                      ORDER BY q.record_id, q.id LIMIT %s) f;

-- name: overview_workers
SELECT worker_id, host, pid, extract(epoch FROM started_at)::float8,
       extract(epoch FROM now() - heartbeat_at)::float8, batches, records
  FROM algolia_sync_workers WHERE heartbeat_at > now() - make_interval(secs => %s)
 ORDER BY host, pid;

-- name: overview_reindex
SELECT p.table_name, p.mode, p.tmp_index, extract(epoch FROM p.started_at)::float8,
       extract(epoch FROM now() - p.updated_at)::float8, p.rows_done, p.rows_total,
       EXISTS (SELECT FROM workerpool_reindex_leases l WHERE l.table_name = p.table_name AND l.expires_at > now())
  FROM workerpool_reindex_progress p ORDER BY p.table_name;


-- ===============================================================================================
-- The public API (workerpool/api/).
-- ===============================================================================================

-- name: key_text_is_pinned
-- Whether a key type's text form depends on the date/time settings (schema.sql: algolia_sync_key_settings).
SELECT algolia_sync_key_settings(%s::regtype) <> '';

-- name: current_setting
SELECT current_setting(%s);

-- name: set_local_config
-- A setting for the rest of the current transaction only.
SELECT set_config(%s, %s, true);

-- name: canonical_keys
-- Template: keys cast to the key's types and back to text, as the capture triggers write them
-- ({text}, over the parts {names}: one text[] per key column, {arrays}).
SELECT array_agg({text}) FROM unnest({arrays}) AS k({names});


-- ===============================================================================================
-- Roles and privileges (db/privileges.py, docs/roles.md).
-- ===============================================================================================

-- name: install_schema
-- The schema workerpool lives in (where its migrations table is), else the one `migrate` would create
-- it in (the first schema of the search_path), with its owner.
SELECT n.nspname, n.nspowner::regrole::text
  FROM pg_namespace n
 WHERE n.oid = coalesce((SELECT c.relnamespace FROM pg_class c WHERE c.oid = to_regclass('workerpool_migrations')),
                        (SELECT oid FROM pg_namespace WHERE nspname = current_schema()));

-- name: untrusted_creators
-- Roles that may create objects in the schema and are neither superusers nor roles that already
-- have every right of the current role, workerpool's owner (predefined pg_* roles are left out:
-- their members are listed themselves).
SELECT r.rolname FROM pg_roles r
 WHERE r.rolname NOT LIKE 'pg\_%%' AND NOT r.rolsuper
   AND has_schema_privilege(r.oid, %s, 'CREATE')
   AND NOT pg_has_role(r.oid, current_user, 'USAGE')
 ORDER BY 1;

-- name: pin_session_path
-- For the rest of a migration's transaction: objects are created in workerpool's schema and every
-- `SET search_path FROM CURRENT` takes that schema and pg_temp (pg_catalog is searched first).
SELECT set_config('search_path', format('%%I, pg_temp', %s::text), true);

-- name: pin_search_paths
SELECT algolia_sync_pin_search_paths();

-- name: role_info
-- A role's superuser flag, or no row when it does not exist.
SELECT rolsuper FROM pg_roles WHERE rolname = %s;

-- name: create_worker_role
-- Template: {} is the role. No password: the DBA sets one (docs/roles.md).
CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;

-- name: grant_worker
SELECT algolia_sync_grant_worker(%s::regrole);

-- name: worker_search_path
-- Template: {role} the worker role, {schema} workerpool's. Its sessions resolve names through
-- pg_catalog and workerpool's schema only (pg_temp last).
ALTER ROLE {role} SET search_path = pg_catalog, {schema}, pg_temp;

-- name: worker_roles
-- The worker roles (their names as they are, unquoted), and whether each is a superuser or owns the
-- relation.
SELECT r.rolname::text, r.rolsuper, pg_has_role(r.oid, c.relowner, 'USAGE')
  FROM algolia_sync_worker_roles w
  JOIN pg_roles r ON r.oid = w.role_name
  JOIN pg_class c ON c.oid = %s
 ORDER BY 1;

-- name: current_role_info
-- The role running this command: superuser, and whether it owns the relation.
SELECT current_user::text, r.rolsuper, pg_has_role(current_user, c.relowner, 'USAGE')
  FROM pg_roles r, pg_class c WHERE r.rolname = current_user AND c.oid = %s;

-- name: grant_select
-- Template: {relation} is a watched table or source view, {schema} its schema, {role} a worker role.
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT ON TABLE {relation} TO {role};

-- name: resolve_relation_name
-- A relation's name as it is called now (quoted and qualified where needed), and its schema.
SELECT c.oid::regclass::text, c.relnamespace::regnamespace::text FROM pg_class c WHERE c.oid = %s;

-- name: failed_since
-- Rows that went to failed since a time (`run --drain`'s exit code).
SELECT count(*) FROM algolia_sync_queue WHERE status = 'failed' AND updated_at >= %s;

-- name: local_statement_timeout
-- statement_timeout for the rest of this transaction only.
SELECT set_config('statement_timeout', %s, true);
