-- A job may carry a result TTL: the job pruner deletes it (and its result) once it finished
-- that long ago, whatever its status's retention. The index holds only jobs with a TTL, by
-- the moment they expire.
ALTER TABLE jobs ADD COLUMN result_ttl_ms BIGINT;
CREATE INDEX jobs_result_expiry ON jobs ((finished_at_ms + result_ttl_ms))
    WHERE result_ttl_ms IS NOT NULL AND finished_at_ms IS NOT NULL;
