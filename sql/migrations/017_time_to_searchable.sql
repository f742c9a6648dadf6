-- workerpool schema, version 17: time to searchable. A worker follows a sample of the tasks Algolia
-- accepts until they are published and records when on the claim's log rows, from which `stats` and
-- the dashboard compute change -> searchable next to change -> acknowledged.

ALTER TABLE algolia_sync_log_batches ADD COLUMN published_at timestamptz;
