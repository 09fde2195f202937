-- Cancelled jobs, cancel requests and paused kinds.
-- A queued job cancelled never runs: it ends `cancelled` at once. A running job's cancel is a
-- request (cancel_requested_at_ms) that the node running it polls for through
-- jobs_cancel_requested, an index that is empty but for the few jobs being cancelled.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled'));
ALTER TABLE jobs ADD COLUMN cancel_requested_at_ms BIGINT;
CREATE INDEX jobs_cancel_requested ON jobs (id)
    WHERE status = 'running' AND cancel_requested_at_ms IS NOT NULL;

-- A broker delivery of a paused kind is parked: its row goes back to the outbox
-- (published_at_ms NULL) with parked_at_ms set, which a submitter's late confirm cannot undo
-- (it marks only rows not parked since it read them).
ALTER TABLE jobs ADD COLUMN parked_at_ms BIGINT;

-- A paused kind's jobs wait: the database queue does not claim them, broker deliveries of the
-- kind are parked in the outbox and the republisher leaves them there until it is resumed.
CREATE TABLE paused_kinds (
    kind TEXT PRIMARY KEY,
    paused_at_ms BIGINT NOT NULL,
    paused_by TEXT
);
