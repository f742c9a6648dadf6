-- workerpool schema, version 2: where `workerpool reindex` keeps its place, so that an interrupted
-- run resumes where it stopped (one row per table being reindexed).
CREATE TABLE IF NOT EXISTS workerpool_reindex_progress (
    table_name text PRIMARY KEY,
    mode       text NOT NULL CHECK (mode IN ('queue', 'atomic')),
    tmp_index  text,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_key   text,
    rows_done  bigint NOT NULL DEFAULT 0,
    rows_total bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);
