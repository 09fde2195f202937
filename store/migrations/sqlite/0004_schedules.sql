-- Schedules create jobs from a template on a trigger; schedule_runs records every slot: fired,
-- deferred, skipped or missed. Times are Unix milliseconds.
CREATE TABLE schedules (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    trigger_type TEXT NOT NULL CHECK (trigger_type IN ('cron', 'interval', 'once')),
    cron_expression TEXT,
    timezone TEXT,
    interval_ms BIGINT,
    trigger_at_ms BIGINT,
    status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'completed')),
    paused_reason TEXT,
    misfire_policy TEXT NOT NULL CHECK (misfire_policy IN ('skip', 'fire_once', 'catch_up')),
    catch_up_window_ms BIGINT NOT NULL,
    overlap_policy TEXT NOT NULL CHECK (overlap_policy IN ('skip', 'queue_one', 'allow')),
    max_consecutive_failures INTEGER NOT NULL,
    next_fire_at_ms BIGINT,
    last_fire_at_ms BIGINT,
    pending_fire_at_ms BIGINT,
    last_job_id TEXT,
    num_runs BIGINT NOT NULL DEFAULT 0,
    num_failures BIGINT NOT NULL DEFAULT 0,
    num_missed BIGINT NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    claim_owner TEXT,
    claim_expires_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX schedules_due ON schedules (status, next_fire_at_ms);

CREATE TABLE schedule_runs (
    id TEXT PRIMARY KEY NOT NULL,
    schedule_id TEXT NOT NULL,
    fire_at_ms BIGINT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('enqueued', 'deferred', 'skipped', 'missed', 'succeeded', 'failed')),
    reason TEXT,
    job_id TEXT,
    lag_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (schedule_id, fire_at_ms)
);

CREATE INDEX schedule_runs_unsettled ON schedule_runs (outcome, job_id);
