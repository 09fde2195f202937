-- The W3C trace id of the request or message that created a job, so its dead letter and
-- its republished messages stay on the same trace.
ALTER TABLE jobs ADD COLUMN trace_id TEXT;
