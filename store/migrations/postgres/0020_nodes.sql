-- Node membership: every node writes a heartbeat; a node silent past the dead-after interval is
-- fenced by a live one, which expires its leases so its jobs run elsewhere at once instead of
-- after the lease. `incarnation` changes each time a node (re)registers, so a node that was
-- only slow learns that it was fenced and never acts on its old claims.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    incarnation TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('alive', 'fenced', 'left')),
    version TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    heartbeat_at_ms BIGINT NOT NULL,
    fenced_at_ms BIGINT,
    fenced_by TEXT,
    num_jobs_reclaimed BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX nodes_alive_heartbeat ON nodes (heartbeat_at_ms) WHERE state = 'alive';
