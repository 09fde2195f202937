-- Every operator action (stop, start, restart of a supervision subtree) with who asked, what,
-- when (Unix milliseconds) and how it ended.
CREATE TABLE ops_audit_log (
    id TEXT PRIMARY KEY NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'denied')),
    detail TEXT,
    request_id TEXT,
    created_at_ms BIGINT NOT NULL
);

CREATE INDEX ops_audit_log_created ON ops_audit_log (created_at_ms DESC, id DESC);
