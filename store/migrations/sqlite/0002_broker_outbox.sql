-- Jobs carried by RabbitMQ. `transport` says who runs a job: 'local' rows are claimed by the
-- database job runner, 'amqp' rows only by broker consumers. An 'amqp' row with
-- `published_at_ms` NULL is in the outbox: stored, but not yet confirmed by the broker; the
-- republisher sends it again until a confirm arrives.
ALTER TABLE jobs ADD COLUMN transport TEXT NOT NULL DEFAULT 'local';
ALTER TABLE jobs ADD COLUMN published_at_ms BIGINT;
CREATE INDEX jobs_outbox ON jobs (transport, published_at_ms, status);
