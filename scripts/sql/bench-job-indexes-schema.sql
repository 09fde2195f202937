-- The jobs table as migrations 0001-0010 leave it on PostgreSQL, with the idempotency
-- constraint and the kind index chosen by the caller (:UNIQ, :KINDIDX, :IDEMIDX), filled with
-- :N queued jobs. Used by scripts/bench-job-indexes.sh.
DROP SCHEMA IF EXISTS bulwark_bench_indexes CASCADE; CREATE SCHEMA bulwark_bench_indexes; SET search_path = bulwark_bench_indexes;
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, payload TEXT NOT NULL,
    result TEXT, error_code TEXT, error_message TEXT, request_id TEXT,
    idempotency_key TEXT :UNIQ, created_at_ms BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL,
    run_at_ms BIGINT NOT NULL, started_at_ms BIGINT, finished_at_ms BIGINT, lease_owner TEXT,
    lease_expires_at_ms BIGINT, transport TEXT NOT NULL DEFAULT 'local', published_at_ms BIGINT, trace_id TEXT);
:KINDIDX
:IDEMIDX
CREATE INDEX jobs_queued ON jobs (run_at_ms) WHERE status = 'queued' AND transport = 'local';
CREATE INDEX jobs_running ON jobs (lease_expires_at_ms) WHERE status = 'running';
CREATE INDEX jobs_live_kinds ON jobs (kind, status) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_unpublished ON jobs (created_at_ms) WHERE transport = 'amqp' AND published_at_ms IS NULL;
INSERT INTO jobs (id, kind, status, max_attempts, payload, created_at_ms, updated_at_ms, run_at_ms, request_id)
SELECT gen_random_uuid()::text, 'sentiment.score', 'queued', 3, '{"texts":["great product"]}', 1000+g, 1000+g, 1000+g, gen_random_uuid()::text
FROM generate_series(1, :N) g;
VACUUM ANALYZE jobs;
