-- Attempt history. The job row keeps its current (or last) attempt: when it started (set by
-- every claim) and the node it ran on (lease_owner while it runs, attempt_node once it ends). An attempt that ends in a retry is copied to job_attempts as
-- the job goes back to the queue, in the same statement, so the happy path (one attempt that
-- succeeds) writes no extra row. An attempt whose node died before it recorded anything
-- leaves no row: its number is missing from the history until the job's next attempt.
ALTER TABLE jobs ADD COLUMN attempt_started_at_ms BIGINT;
ALTER TABLE jobs ADD COLUMN attempt_node TEXT;
CREATE TABLE job_attempts (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    node TEXT,
    started_at_ms BIGINT,
    finished_at_ms BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    PRIMARY KEY (job_id, attempt)
);

-- A running job's progress (JSON: done, total, message, updated_at_ms), as it last reported
-- it; an audit reports its items done. A retried job starts its next attempt without one.
ALTER TABLE jobs ADD COLUMN progress TEXT;
