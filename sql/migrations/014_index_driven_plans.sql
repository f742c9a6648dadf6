-- workerpool schema, version 14: the claim, the release and the lease recovery are planned as index
-- scans whatever the statistics say. PL/pgSQL plans each statement once per session; after an
-- ANALYZE of an empty queue (autovacuum, a nightly job), the recovery's two EXISTS under an OR were
-- planned as a hash of every pending row, built on each call, or as a scan of them per expired claim:
-- quadratic, 55 s of CPU in one call with 100,000 rows queued, while the worker's batches that
-- Algolia had already accepted waited for their acknowledgement. The recovery now probes per expired
-- claim (scalar subqueries), and none of the three may plan a sequential scan of the queue.

ALTER FUNCTION get_pending_algolia_syncs(integer, integer, uuid, text) SET enable_seqscan = off;
ALTER FUNCTION algolia_sync_release(bigint[], uuid, text[], integer[], boolean[], integer, boolean)
    SET enable_seqscan = off;

-- Return rows whose lease expired to the queue, merging into a newer pending row of the same key
-- (the unique pending index forbids two). A row that has used up its attempts this way (a batch
-- that keeps killing its worker) becomes failed instead of looping.
CREATE OR REPLACE FUNCTION algolia_sync_recover_expired(max_attempts integer) RETURNS integer
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
