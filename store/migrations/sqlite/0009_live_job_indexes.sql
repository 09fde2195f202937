-- The queue stays small under a long history: the indexes the claimers, the lease rescue, the
-- queue-depth gauge and the outbox read hold live rows only, so finished jobs cost them nothing.
DROP INDEX jobs_claimable;
DROP INDEX jobs_leases;
DROP INDEX jobs_outbox;
CREATE INDEX jobs_queued ON jobs (run_at_ms) WHERE status = 'queued' AND transport = 'local';
CREATE INDEX jobs_running ON jobs (lease_expires_at_ms) WHERE status = 'running';
CREATE INDEX jobs_live_kinds ON jobs (kind, status) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_unpublished ON jobs (created_at_ms)
    WHERE transport = 'amqp' AND published_at_ms IS NULL;
