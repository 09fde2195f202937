-- The jobs table is the source of truth for every job. Times are Unix milliseconds.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
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
    lease_expires_at_ms BIGINT
);

CREATE INDEX jobs_claimable ON jobs (status, run_at_ms);
CREATE INDEX jobs_leases ON jobs (status, lease_expires_at_ms);
CREATE INDEX jobs_kind_status ON jobs (kind, status);
