-- The gate of a limited kind (`[jobs.kinds.<kind>]` max_running, max_running_per_node,
-- max_starts_per_second). A claim of the kind's jobs, by the database queue or by a broker
-- delivery, first locks the kind's row: claimers of one kind take turns, each counts the
-- kind's running jobs after the previous one committed, so a limit holds across nodes. The
-- row also holds the kind's start-rate bucket: `tokens` starts left as of `refilled_at_ms`.
CREATE TABLE kind_gates (
    kind TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    refilled_at_ms BIGINT NOT NULL
);
