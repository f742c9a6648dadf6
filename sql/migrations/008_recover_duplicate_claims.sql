-- workerpool schema, version 8: lease recovery when one key has several expired claims.
-- A worker killed while holding key K leaves an expired claim of K; a newer change of K is then
-- claimed by another worker, which is killed too. Recovery returned both rows to 'pending' in one
-- UPDATE, which the one-pending-row-per-key index refused, and the handler meant for a racing
-- writer swallowed that every time: no expired claim was recovered again. Now every expired claim
-- of a key but the newest is dropped first.

CREATE OR REPLACE FUNCTION algolia_sync_recover_expired(max_attempts integer) RETURNS integer
LANGUAGE plpgsql
-- Per-key checks as index probes whatever the (stale) statistics say; see get_pending_algolia_syncs.
SET enable_material = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET search_path FROM CURRENT AS $$
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
    DELETE FROM algolia_sync_queue q
     WHERE q.status = 'processing' AND q.locked_until < now()
       AND (EXISTS (SELECT 1 FROM algolia_sync_queue p
                     WHERE p.status = 'pending' AND p.table_name = q.table_name AND p.record_id = q.record_id)
            OR EXISTS (SELECT 1 FROM algolia_sync_queue p
                        WHERE p.status = 'processing' AND p.table_name = q.table_name
                          AND p.record_id = q.record_id AND p.locked_until < now() AND p.id > q.id));
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
