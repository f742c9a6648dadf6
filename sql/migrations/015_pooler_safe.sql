-- workerpool schema, version 15: nothing relies on a server session outliving a transaction, so
-- workerpool runs behind transaction pooling (PgBouncer, Supavisor, RDS Proxy). `reindex` holds a
-- lease row per table instead of a session advisory lock; worker roles may see and take it.

-- One reindex per table at a time, across hosts and through any pooler: the running reindex holds
-- its table's row and renews `expires_at` while it runs; a row past its expiry belongs to a reindex
-- that died, and the next one takes it over. (A session advisory lock would need one server session
-- from lock to unlock, which transaction pooling does not give.)
CREATE TABLE workerpool_reindex_leases (
    table_name text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE OR REPLACE FUNCTION algolia_sync_grant_worker(worker regrole) RETURNS void
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

DO $$
DECLARE
    worker regrole;
BEGIN
    FOR worker IN SELECT role_name FROM algolia_sync_worker_roles LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE workerpool_reindex_leases TO %s', worker);
    END LOOP;
END;
$$;
