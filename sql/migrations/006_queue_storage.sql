-- workerpool schema, version 6: storage parameters for a queue's churn.
-- Every synced record leaves dead row versions behind (benchmarks/README.md counts them): in the
-- queue the claimed version and the acknowledged one, in the inbox one per captured statement, in the
-- hashes table the previous hash of a re-sent record, in the log the rows retention deletes. Vacuum
-- must come round often enough that these tables stay at their working size. Autovacuum wakes per
-- database every autovacuum_naptime (a server setting, 1 min by default) and vacuums a table once its
-- dead tuples pass threshold + scale_factor x its rows; the defaults (50 + 20%) are meant for tables
-- whose size is their content, not for a queue that turns its whole content over many times a minute.
-- Only parameters are set here (no rewrite, no long lock): fillfactor applies to pages written from now on.

-- Queue (already fillfactor 70 and 1%): vacuum as soon as a few thousand dead versions exist, unthrottled.
ALTER TABLE algolia_sync_queue SET (autovacuum_vacuum_threshold = 1000,
                                    autovacuum_vacuum_scale_factor = 0.01,
                                    autovacuum_vacuum_cost_delay = 0,
                                    autovacuum_vacuum_insert_threshold = 1000,
                                    autovacuum_analyze_threshold = 1000,
                                    autovacuum_analyze_scale_factor = 0.02);

-- Inbox: rows are inserted and deleted, never updated (no fillfactor to reserve).
ALTER TABLE algolia_sync_inbox SET (autovacuum_vacuum_threshold = 1000,
                                    autovacuum_vacuum_scale_factor = 0.01,
                                    autovacuum_vacuum_cost_delay = 0,
                                    autovacuum_vacuum_insert_threshold = 1000);

-- Hashes: one row per record ever sent, updated in place on each re-send; fillfactor 80 keeps those
-- updates HOT (pruned on the page without vacuum). Vacuum the rest at 5% instead of 20%.
ALTER TABLE algolia_sync_hashes SET (autovacuum_vacuum_scale_factor = 0.05,
                                     autovacuum_analyze_scale_factor = 0.05);

-- Log: append-only, pruned by retention in small batches (LOG_RETENTION_DAYS); vacuum at 2% of it
-- dead so the freed pages are reused by new log rows instead of the table growing. Throttled as usual
-- (it is the largest of the four). Inserts also trigger vacuum at 5%, keeping its visibility map
-- current.
ALTER TABLE algolia_sync_log SET (autovacuum_vacuum_scale_factor = 0.02,
                                  autovacuum_vacuum_insert_scale_factor = 0.05,
                                  autovacuum_analyze_scale_factor = 0.02);

-- Workers: a heartbeat updates each worker's row every few seconds; half-empty pages keep every
-- update HOT.
ALTER TABLE algolia_sync_workers SET (fillfactor = 50);
