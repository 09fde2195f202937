-- Claims and finishes 19,968 queued jobs, 64 per statement and one commit per batch, as the
-- job runner's claim and group-committed completion do; prints the WAL written and this
-- backend's CPU time per job. Used by scripts/bench-job-indexes.sh.
SET search_path = bulwark_bench_indexes;
SELECT pg_current_wal_insert_lsn() AS lsn0 \gset
SELECT pg_backend_pid() AS pid \gset
\setenv BACKEND_PID :pid
\! awk '{print $14 + $15}' /proc/$BACKEND_PID/stat > "$CPU_FILE.0"
DO $$
DECLARE claimed_ids text[];
BEGIN
  FOR batch IN 1..312 LOOP
    WITH claimed AS (UPDATE jobs SET status = 'running', attempts = attempts + 1,
        lease_owner = 'bench', lease_expires_at_ms = 999999999, updated_at_ms = 5,
        started_at_ms = COALESCE(started_at_ms, 5)
      WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' AND transport = 'local'
        AND run_at_ms <= 99999999 ORDER BY run_at_ms LIMIT 64 FOR UPDATE SKIP LOCKED)
      RETURNING id)
    SELECT array_agg(id) INTO claimed_ids FROM claimed;
    UPDATE jobs SET status = 'succeeded', result = '{"ok":1}', error_code = NULL,
        error_message = NULL, updated_at_ms = 6, finished_at_ms = 6, lease_owner = NULL,
        lease_expires_at_ms = NULL
      FROM UNNEST(claimed_ids) AS finished(job_id)
      WHERE jobs.id = finished.job_id AND jobs.status = 'running' AND jobs.lease_owner = 'bench';
    COMMIT;
  END LOOP;
END $$;
\! awk '{print $14 + $15}' /proc/$BACKEND_PID/stat > "$CPU_FILE.1"
SELECT round(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :'lsn0') / 19968) AS wal_bytes_per_job \gset
\echo wal_bytes_per_job :wal_bytes_per_job
