-- Fewer index entries per job state change. A job is written three times (insert, claim,
-- finish) and none of those updates can be HOT (status is indexed), so every index of the
-- table takes a new entry each time:
-- - idempotency keys are unique only where one is given; most jobs have none, and a NULL
--   still took an entry in the full unique index on every write;
-- - jobs_kind_status covered every row of the history; the gauges read jobs_live_kinds and
--   the listing walks the primary key, so nothing read it.
-- Measured with the claim and finish statements over 20,000 jobs: 1,395 -> 1,088 bytes of WAL
-- per job (docs/benchmarks.md, "Leaner job indexes").
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
DROP INDEX jobs_kind_status;

-- The dead-letter actor's scan for newly failed jobs read the whole history; failures are few,
-- so an index of them alone costs the healthy path nothing.
CREATE INDEX jobs_failed ON jobs (finished_at_ms) WHERE status IN ('dead', 'failed');
