-- Workflows: a job may wait for other jobs (its parents). Every edge is kept for the graph
-- view; a job still waiting has a row in job_waits (a small table: only jobs waiting now),
-- which every node's control actor reads to release the job (all parents succeeded) or
-- cancel it (a parent failed, with the `cancel` policy). A waiting job is stored queued with
-- run_at_ms in the year 9999, so neither the claim nor the outbox ever reads it until its
-- release sets run_at_ms to the moment it may run.
CREATE TABLE job_dependencies (
    job_id TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    PRIMARY KEY (job_id, parent_id)
);
CREATE INDEX job_dependencies_parent ON job_dependencies (parent_id);

CREATE TABLE job_waits (
    job_id TEXT PRIMARY KEY,
    on_parent_failure TEXT NOT NULL CHECK (on_parent_failure IN ('cancel', 'run')),
    created_at_ms BIGINT NOT NULL
);
