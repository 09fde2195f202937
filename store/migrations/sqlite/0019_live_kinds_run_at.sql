-- The queue-depth gauges also report how long the oldest due job of each kind has waited: the
-- live rows' index carries run_at_ms, so that reading stays on the index of live rows.
DROP INDEX jobs_live_kinds;
CREATE INDEX jobs_live_kinds ON jobs (kind, status, run_at_ms) WHERE status IN ('queued', 'running');
