-- workerpool schema, version 14: the claim, the release and the lease recovery are planned as index
-- scans whatever the statistics say. PL/pgSQL plans each statement once per session; after an
-- ANALYZE of an empty queue (autovacuum, a nightly job), a plan of the recovery made then scanned the
-- whole queue once per expired claim when it held 100,000 rows: 55 s of CPU in one call, while the
-- worker's batches that Algolia had already accepted waited for their acknowledgement.

ALTER FUNCTION get_pending_algolia_syncs(integer, integer, uuid, text) SET enable_seqscan = off;
ALTER FUNCTION algolia_sync_release(bigint[], uuid, text[], integer[], boolean[], integer, boolean)
    SET enable_seqscan = off;
ALTER FUNCTION algolia_sync_recover_expired(integer) SET enable_seqscan = off;
