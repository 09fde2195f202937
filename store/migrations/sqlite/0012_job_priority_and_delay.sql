-- Per-job timeouts (NULL: none), priorities (0 lowest to 9 highest; rows written before this migration get the default 5) and
-- delayed jobs. Local jobs are claimed by priority, then by when they are due: the queue index
-- is ordered by (priority, run_at_ms) so a claim reads each priority's due rows in order and
-- never walks over jobs delayed into the future.
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 5
    CHECK (priority BETWEEN 0 AND 9);
ALTER TABLE jobs ADD COLUMN timeout_ms BIGINT;
DROP INDEX jobs_queued;
CREATE INDEX jobs_queued ON jobs (priority, run_at_ms) WHERE status = 'queued' AND transport = 'local';
-- The outbox is read by due time: a delayed broker job is published when it is due.
DROP INDEX jobs_unpublished;
CREATE INDEX jobs_unpublished ON jobs (run_at_ms)
    WHERE transport = 'amqp' AND published_at_ms IS NULL;
-- The pruner keeps a finished job whose dead letter is still open; it looks letters up by job.
CREATE INDEX dead_letters_job ON dead_letters (job_id);
