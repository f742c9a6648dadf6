-- workerpool schema, version 12: the claim function in PL/pgSQL, whose statement plans last the
-- session. As a SQL function its UPDATE was planned again on every call: ~0.4 us of Postgres CPU per
-- record claimed at 1,000 a call. Same signature, same statement.

CREATE OR REPLACE FUNCTION get_pending_algolia_syncs(
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
SET search_path FROM CURRENT AS $$
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
