-- Jobs that could not be done: local jobs that ended dead or failed, and broker messages
-- dead-lettered to <ns>.dlq.<kind>. One row per job (source_key), updated if it dies again.
-- Times are Unix milliseconds.
CREATE TABLE dead_letters (
    id TEXT PRIMARY KEY NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('local', 'broker')),
    source_key TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    headers TEXT,
    error_code TEXT NOT NULL,
    error_message TEXT NOT NULL,
    retriable BOOLEAN NOT NULL,
    retry_count INTEGER NOT NULL DEFAULT 0,
    request_id TEXT,
    trace_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'retrying', 'parked', 'requeued', 'recovered')),
    next_retry_at_ms BIGINT,
    dead_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX dead_letters_status ON dead_letters (status, next_retry_at_ms);
CREATE INDEX dead_letters_queue ON dead_letters (queue, error_code);
CREATE INDEX jobs_finished ON jobs (status, finished_at_ms);
