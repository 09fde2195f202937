-- The pruner's index of finished jobs held every version of every job: a queued or running
-- row (finished_at_ms NULL) took an entry on its insert and again on its claim, neither of
-- which any reader looks for. Only finished rows are indexed now, so a job's insert and claim
-- write one index entry fewer each (the pruner's `finished_at_ms < $2` implies the
-- predicate, so it still reads this index). Rebuilding it reads the table once, at startup.
DROP INDEX jobs_finished;
CREATE INDEX jobs_finished ON jobs (status, finished_at_ms) WHERE finished_at_ms IS NOT NULL;
