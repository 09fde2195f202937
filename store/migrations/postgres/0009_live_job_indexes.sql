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

-- Wakes the job runners of every node (LISTEN bulwark_jobs) when a statement inserts jobs for
-- the local queue, instead of leaving them to their poll timer. One notification per statement,
-- whatever its number of rows; PostgreSQL folds identical ones in a transaction.
CREATE FUNCTION bulwark_notify_queued_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted_jobs WHERE transport = 'local' AND status = 'queued') THEN
        PERFORM pg_notify('bulwark_jobs', '');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_notify_queued AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION bulwark_notify_queued_jobs();
