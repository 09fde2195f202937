-- The scheduler sleeps until the earliest due slot of an active schedule, so it asks for
-- `MIN(next_fire_at_ms) ... WHERE status = 'active'` after every pass, and claims due schedules
-- on every wake: `next_fire_at_ms <= now OR pending_fire_at_ms IS NOT NULL` among active rows.
-- Both get a partial index over active rows only (paused and completed schedules are never
-- due), so neither query walks every schedule.
CREATE INDEX schedules_active_due ON schedules (next_fire_at_ms) WHERE status = 'active';
CREATE INDEX schedules_active_pending ON schedules (pending_fire_at_ms)
    WHERE status = 'active' AND pending_fire_at_ms IS NOT NULL;
