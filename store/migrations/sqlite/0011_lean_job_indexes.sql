-- Fewer index entries per job state change: jobs_kind_status covered every row of the
-- history, and nothing read it (the gauges read jobs_live_kinds, the listing walks the
-- primary key). The idempotency key's unique constraint is part of the table here; SQLite
-- cannot drop it without rebuilding the table, so it stays.
DROP INDEX jobs_kind_status;

-- The dead-letter actor's scan for newly failed jobs read the whole history; failures are few,
-- so an index of them alone costs the healthy path nothing.
CREATE INDEX jobs_failed ON jobs (finished_at_ms) WHERE status IN ('dead', 'failed');
