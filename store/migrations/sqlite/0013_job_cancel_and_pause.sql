-- Cancelled jobs, cancel requests and paused kinds.
-- A queued job cancelled never runs: it ends `cancelled` at once. A running job's cancel is a
-- request (cancel_requested_at_ms) that the node running it polls for through
-- jobs_cancel_requested, an index that is empty but for the few jobs being cancelled.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt with the new status
-- and the same columns, then its indexes are made again.
CREATE TABLE jobs_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    payload TEXT NOT NULL,
    result TEXT,
    error_code TEXT,
    error_message TEXT,
    request_id TEXT,
    idempotency_key TEXT UNIQUE,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    run_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    finished_at_ms BIGINT,
    lease_owner TEXT,
    lease_expires_at_ms BIGINT,
    transport TEXT NOT NULL DEFAULT 'local',
    published_at_ms BIGINT,
    trace_id TEXT,
    priority INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    timeout_ms BIGINT,
    cancel_requested_at_ms BIGINT,
    -- A broker delivery of a paused kind is parked: its row goes back to the outbox
    -- (published_at_ms NULL) with parked_at_ms set, which a submitter's late confirm cannot
    -- undo (it marks only rows not parked since it read them).
    parked_at_ms BIGINT
);
INSERT INTO jobs_rebuilt (id, kind, status, attempts, max_attempts, payload, result, error_code,
    error_message, request_id, idempotency_key, created_at_ms, updated_at_ms, run_at_ms,
    started_at_ms, finished_at_ms, lease_owner, lease_expires_at_ms, transport, published_at_ms,
    trace_id, priority, timeout_ms)
SELECT id, kind, status, attempts, max_attempts, payload, result, error_code, error_message,
    request_id, idempotency_key, created_at_ms, updated_at_ms, run_at_ms, started_at_ms,
    finished_at_ms, lease_owner, lease_expires_at_ms, transport, published_at_ms, trace_id,
    priority, timeout_ms
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_rebuilt RENAME TO jobs;
CREATE INDEX jobs_finished ON jobs (status, finished_at_ms);
CREATE INDEX jobs_running ON jobs (lease_expires_at_ms) WHERE status = 'running';
CREATE INDEX jobs_live_kinds ON jobs (kind, status) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_failed ON jobs (finished_at_ms) WHERE status IN ('dead', 'failed');
CREATE INDEX jobs_queued ON jobs (priority, run_at_ms) WHERE status = 'queued' AND transport = 'local';
CREATE INDEX jobs_unpublished ON jobs (run_at_ms)
    WHERE transport = 'amqp' AND published_at_ms IS NULL;
CREATE INDEX jobs_cancel_requested ON jobs (id)
    WHERE status = 'running' AND cancel_requested_at_ms IS NOT NULL;

-- A paused kind's jobs wait: the database queue does not claim them, broker deliveries of the
-- kind are parked in the outbox and the republisher leaves them there until it is resumed.
CREATE TABLE paused_kinds (
    kind TEXT PRIMARY KEY NOT NULL,
    paused_at_ms BIGINT NOT NULL,
    paused_by TEXT
);
