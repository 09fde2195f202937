//! Compares ways of writing a batch of jobs to PostgreSQL, each on a fresh schema of the test
//! database (`BULWARK_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`):
//!
//! - `unnest_returning_rows`: [`Store::insert_job_batch`], the store's statement
//!   (`INSERT ... SELECT FROM UNNEST(...) ON CONFLICT DO NOTHING RETURNING <every column>`);
//! - `unnest_returning_ids`: the same statement returning only the ids;
//! - `copy_then_insert`: `COPY` into a temporary table, then `INSERT ... SELECT` from it with
//!   the same conflict rule, in one transaction;
//! - `single`: [`Store::insert_job`], one statement and commit per job, for the ratio;
//! - `single_values`: one `INSERT ... VALUES` per job, the statement the single insert used
//!   before it became a batch of one, to show that change costs nothing.
//!
//! Run: `cargo run --release -p bulwark-store --example batch_insert_methods -- [jobs] [batch]`
//! (defaults 100000 and 1000). Prints JSON. A measurement, not a test.

use std::time::Instant;

use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{JobRoute, NewJob, Store};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

fn bench_job(key: String) -> NewJob {
    NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload: json!({ "texts": ["benchmark sentence: the service was quick and pleasant"] }),
        idempotency_key: Some(key),
        request_id: Some("bench-enqueue".to_owned()),
        trace_id: None,
        max_attempts: 5,
    }
}

fn batches(num_jobs: usize, batch_size: usize, method: &str) -> Vec<Vec<NewJob>> {
    let jobs: Vec<NewJob> = (0..num_jobs)
        .map(|index| bench_job(format!("{method}-{index}")))
        .collect();
    jobs.chunks(batch_size).map(<[NewJob]>::to_vec).collect()
}

const UNNEST_IDS: &str = "INSERT INTO jobs (id, kind, status, attempts, max_attempts, payload, \
     request_id, idempotency_key, created_at_ms, updated_at_ms, run_at_ms, transport, \
     published_at_ms, trace_id) \
     SELECT b.id, b.kind, 'queued', 0, b.max_attempts, b.payload, b.request_id, b.key, \
     $1, $1, $1, 'local', NULL, b.trace_id \
     FROM UNNEST($2::text[], $3::text[], $4::int4[], $5::text[], $6::text[], $7::text[], \
     $8::text[]) AS b(id, kind, max_attempts, payload, request_id, key, trace_id) \
     ORDER BY b.key ON CONFLICT (idempotency_key) DO NOTHING RETURNING id";

const SINGLE_VALUES: &str = "INSERT INTO jobs (id, kind, status, attempts, max_attempts, \
     payload, request_id, idempotency_key, created_at_ms, updated_at_ms, run_at_ms, transport, \
     published_at_ms, trace_id) \
     VALUES ($1, $2, 'queued', 0, $3, $4, $5, $6, $7, $7, $7, 'local', NULL, $8) \
     ON CONFLICT (idempotency_key) DO NOTHING RETURNING id";

const COPY_TABLE: &str = "CREATE TEMP TABLE IF NOT EXISTS job_batch (id TEXT, kind TEXT, \
     max_attempts INT4, payload TEXT, request_id TEXT, key TEXT, trace_id TEXT) \
     ON COMMIT DELETE ROWS";
const COPY_IN: &str = "COPY job_batch FROM STDIN";
const COPY_INSERT: &str = "INSERT INTO jobs (id, kind, status, attempts, max_attempts, \
     payload, request_id, idempotency_key, created_at_ms, updated_at_ms, run_at_ms, transport, \
     published_at_ms, trace_id) \
     SELECT b.id, b.kind, 'queued', 0, b.max_attempts, b.payload, b.request_id, b.key, \
     $1, $1, $1, 'local', NULL, b.trace_id FROM job_batch b \
     ORDER BY b.key ON CONFLICT (idempotency_key) DO NOTHING RETURNING id";

/// Escapes a value for `COPY ... FROM STDIN` in text format.
fn copy_text(value: Option<&str>) -> String {
    let Some(text) = value else {
        return "\\N".to_owned();
    };
    text.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

async fn fresh_store() -> (TestDatabase, Store, sqlx::PgPool) {
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let store = database.open().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&database.url)
        .await
        .expect("pool");
    (database, store, pool)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let num_jobs: usize = args
        .next()
        .map_or(100_000, |text| text.parse().expect("jobs"));
    let batch_size: usize = args
        .next()
        .map_or(1_000, |text| text.parse().expect("batch"));
    let now = bulwark_store::now_ms();
    let mut report = serde_json::Map::new();
    let mut record = |name: &str, num: usize, seconds: f64| {
        report.insert(
            name.to_owned(),
            json!({"jobs": num, "seconds": seconds, "jobs_per_second": num as f64 / seconds}),
        );
    };

    {
        let (_database, store, _pool) = fresh_store().await;
        let batches = batches(num_jobs, batch_size, "rows");
        let started = Instant::now();
        for batch in &batches {
            store
                .insert_job_batch(batch, JobRoute::Local)
                .await
                .expect("batch");
        }
        record(
            "unnest_returning_rows",
            num_jobs,
            started.elapsed().as_secs_f64(),
        );
    }

    {
        let (_database, _store, pool) = fresh_store().await;
        let batches = batches(num_jobs, batch_size, "ids");
        let started = Instant::now();
        for batch in &batches {
            let ids: Vec<String> = batch
                .iter()
                .map(|_| uuid::Uuid::now_v7().to_string())
                .collect();
            let kinds: Vec<&str> = batch.iter().map(|job| job.kind.as_str()).collect();
            let max_attempts: Vec<i32> = batch.iter().map(|_| 5).collect();
            let payloads: Vec<String> = batch.iter().map(|job| job.payload.to_string()).collect();
            let request_ids: Vec<Option<&str>> =
                batch.iter().map(|job| job.request_id.as_deref()).collect();
            let keys: Vec<Option<&str>> = batch
                .iter()
                .map(|job| job.idempotency_key.as_deref())
                .collect();
            let trace_ids: Vec<Option<&str>> =
                batch.iter().map(|job| job.trace_id.as_deref()).collect();
            let created: Vec<String> = sqlx::query_scalar(UNNEST_IDS)
                .bind(now)
                .bind(ids)
                .bind(kinds)
                .bind(max_attempts)
                .bind(payloads)
                .bind(request_ids)
                .bind(keys)
                .bind(trace_ids)
                .fetch_all(&pool)
                .await
                .expect("unnest");
            assert_eq!(created.len(), batch.len());
        }
        record(
            "unnest_returning_ids",
            num_jobs,
            started.elapsed().as_secs_f64(),
        );
    }

    {
        let (_database, _store, pool) = fresh_store().await;
        let batches = batches(num_jobs, batch_size, "copy");
        let started = Instant::now();
        for batch in &batches {
            let mut data = String::new();
            for job in batch {
                let id = uuid::Uuid::now_v7().to_string();
                let columns = [
                    copy_text(Some(&id)),
                    copy_text(Some(&job.kind)),
                    "5".to_owned(),
                    copy_text(Some(&job.payload.to_string())),
                    copy_text(job.request_id.as_deref()),
                    copy_text(job.idempotency_key.as_deref()),
                    copy_text(job.trace_id.as_deref()),
                ];
                data.push_str(&columns.join("\t"));
                data.push('\n');
            }
            let mut transaction = pool.begin().await.expect("begin");
            sqlx::query(COPY_TABLE)
                .execute(&mut *transaction)
                .await
                .expect("temp table");
            let mut copy = transaction.copy_in_raw(COPY_IN).await.expect("copy in");
            copy.send(data.as_bytes()).await.expect("copy data");
            copy.finish().await.expect("copy finish");
            let created: Vec<String> = sqlx::query_scalar(COPY_INSERT)
                .bind(now)
                .fetch_all(&mut *transaction)
                .await
                .expect("insert from copy");
            transaction.commit().await.expect("commit");
            assert_eq!(created.len(), batch.len());
        }
        record(
            "copy_then_insert",
            num_jobs,
            started.elapsed().as_secs_f64(),
        );
    }

    {
        let (_database, store, _pool) = fresh_store().await;
        let num_single = (num_jobs / 10).max(1);
        let started = Instant::now();
        for index in 0..num_single {
            store
                .insert_job(&bench_job(format!("single-{index}")))
                .await
                .expect("single");
        }
        record("single", num_single, started.elapsed().as_secs_f64());
    }

    {
        let (_database, _store, pool) = fresh_store().await;
        let num_single = (num_jobs / 10).max(1);
        let started = Instant::now();
        for index in 0..num_single {
            let job = bench_job(format!("values-{index}"));
            let created: Option<String> = sqlx::query_scalar(SINGLE_VALUES)
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&job.kind)
                .bind(5_i32)
                .bind(job.payload.to_string())
                .bind(&job.request_id)
                .bind(&job.idempotency_key)
                .bind(now)
                .bind(&job.trace_id)
                .fetch_optional(&pool)
                .await
                .expect("single values");
            assert!(created.is_some());
        }
        record("single_values", num_single, started.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({"batch_size": batch_size, "methods": report}))
            .expect("json")
    );
}
