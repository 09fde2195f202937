//! Compares ways of writing a batch of jobs to PostgreSQL, each run on a fresh schema of the
//! test database (`BULWARK_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), in two interleaved rounds:
//!
//! - `store_batch`: [`Store::insert_job_batch`] as shipped (`INSERT ... SELECT FROM UNNEST(...)
//!   ON CONFLICT DO NOTHING RETURNING id`, outcomes per job);
//! - `unnest_returning_ids`: that statement alone;
//! - `unnest_returning_rows`: the same statement returning every column (the first version);
//! - `copy_then_insert`: `COPY` into a temporary table, then `INSERT ... SELECT` from it with
//!   the same conflict rule and `RETURNING id`, in one transaction;
//! - `single`: [`Store::insert_job`], one statement and commit per job, for the ratio;
//! - `single_values`: one `INSERT ... VALUES` per job, the statement the single insert used
//!   before it became a batch of one.
//!
//! Run: `cargo run --release -p bulwark-store --example batch_insert_methods -- [jobs] [batch]`
//! (defaults 100000 and 1000; the single methods take a twentieth per round). Prints JSON. A
//! measurement, not a test.

use std::time::Instant;

use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{JobRoute, NewJob, Store};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;

fn bench_job(key: String) -> NewJob {
    NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload: json!({ "texts": ["benchmark sentence: the service was quick and pleasant"] }),
        idempotency_key: Some(key),
        request_id: Some("bench-enqueue".to_owned()),
        trace_id: None,
        max_attempts: 5,
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    }
}

const COLUMNS: &str = "id, kind, status, attempts, max_attempts, payload, request_id, \
     idempotency_key, created_at_ms, updated_at_ms, run_at_ms, transport, published_at_ms, \
     trace_id";

const UNNEST_SELECT: &str = "SELECT b.id, b.kind, 'queued', 0, b.max_attempts, b.payload, \
     b.request_id, b.key, $1, $1, $1, 'local', NULL::int8, b.trace_id \
     FROM UNNEST($2::text[], $3::text[], $4::int4[], $5::text[], $6::text[], $7::text[], \
     $8::text[]) AS b(id, kind, max_attempts, payload, request_id, key, trace_id) \
     ORDER BY b.key ON CONFLICT (idempotency_key) DO NOTHING RETURNING ";

const RETURNED_ROW: &str = "id, kind, status, attempts, max_attempts, payload, result, \
     error_code, error_message, request_id, idempotency_key, created_at_ms, updated_at_ms, \
     run_at_ms, started_at_ms, finished_at_ms, lease_owner, lease_expires_at_ms, trace_id";

const COPY_TABLE: &str = "CREATE TEMP TABLE IF NOT EXISTS job_batch (id TEXT, kind TEXT, \
     max_attempts INT4, payload TEXT, request_id TEXT, key TEXT, trace_id TEXT) \
     ON COMMIT DELETE ROWS";
const COPY_IN: &str = "COPY job_batch FROM STDIN";
const COPY_SELECT: &str = "SELECT b.id, b.kind, 'queued', 0, b.max_attempts, b.payload, \
     b.request_id, b.key, $1, $1, $1, 'local', NULL::int8, b.trace_id FROM job_batch b \
     ORDER BY b.key ON CONFLICT (idempotency_key) DO NOTHING RETURNING id";

const SINGLE_VALUES: &str = "VALUES ($1, $2, 'queued', 0, $3, $4, $5, $6, $7, $7, $7, \
     'local', NULL, $8) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id";

/// A fresh schema with the store's migrations, the store on it, and a plain pool for raw SQL.
struct Fresh {
    _database: TestDatabase,
    store: Store,
    pool: sqlx::PgPool,
}

async fn fresh() -> Fresh {
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let store = database.open().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&database.url)
        .await
        .expect("pool");
    Fresh {
        _database: database,
        store,
        pool,
    }
}

fn batches(num_jobs: usize, batch_size: usize, method: &str) -> Vec<Vec<NewJob>> {
    let jobs: Vec<NewJob> = (0..num_jobs)
        .map(|index| bench_job(format!("{method}-{index}")))
        .collect();
    jobs.chunks(batch_size).map(<[NewJob]>::to_vec).collect()
}

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

/// Runs the UNNEST statement returning `returning`; returns the number of rows returned.
async fn unnest(pool: &sqlx::PgPool, batch: &[NewJob], returning: &str) -> usize {
    let statement = format!("INSERT INTO jobs ({COLUMNS}) {UNNEST_SELECT}{returning}");
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
    let trace_ids: Vec<Option<&str>> = batch.iter().map(|job| job.trace_id.as_deref()).collect();
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(bulwark_core::now_ms())
        .bind(ids)
        .bind(kinds)
        .bind(max_attempts)
        .bind(payloads)
        .bind(request_ids)
        .bind(keys)
        .bind(trace_ids)
        .fetch_all(pool)
        .await
        .expect("unnest")
        .len()
}

/// COPYs the batch into a temporary table and inserts from it; returns the rows created.
async fn copy_then_insert(pool: &sqlx::PgPool, batch: &[NewJob]) -> usize {
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
    let statement = format!("INSERT INTO jobs ({COLUMNS}) {COPY_SELECT}");
    let created = sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(bulwark_core::now_ms())
        .fetch_all(&mut *transaction)
        .await
        .expect("insert from copy")
        .len();
    transaction.commit().await.expect("commit");
    created
}

/// Times one batch method over `num_jobs` jobs on a fresh schema; returns seconds.
async fn time_batches(method: &str, num_jobs: usize, batch_size: usize) -> f64 {
    let fresh = fresh().await;
    let batches = batches(num_jobs, batch_size, method);
    let started = Instant::now();
    for batch in &batches {
        let created = match method {
            "store_batch" => fresh
                .store
                .insert_job_batch(batch, JobRoute::Local)
                .await
                .expect("store batch")
                .len(),
            "unnest_returning_ids" => unnest(&fresh.pool, batch, "id").await,
            "unnest_returning_rows" => unnest(&fresh.pool, batch, RETURNED_ROW).await,
            "copy_then_insert" => copy_then_insert(&fresh.pool, batch).await,
            other => panic!("unknown method {other}"),
        };
        assert_eq!(created, batch.len(), "{method}: every job created");
    }
    started.elapsed().as_secs_f64()
}

/// Times one single-insert method over `num_jobs` jobs on a fresh schema; returns seconds.
async fn time_singles(method: &str, num_jobs: usize) -> f64 {
    let fresh = fresh().await;
    let statement = format!("INSERT INTO jobs ({COLUMNS}) {SINGLE_VALUES}");
    let started = Instant::now();
    for index in 0..num_jobs {
        let job = bench_job(format!("{method}-{index}"));
        if method == "single" {
            fresh.store.insert_job(&job).await.expect("single");
            continue;
        }
        let created: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(statement.clone()))
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(&job.kind)
            .bind(5_i32)
            .bind(job.payload.to_string())
            .bind(&job.request_id)
            .bind(&job.idempotency_key)
            .bind(bulwark_core::now_ms())
            .bind(&job.trace_id)
            .fetch_optional(&fresh.pool)
            .await
            .expect("single values");
        assert!(created.is_some());
    }
    started.elapsed().as_secs_f64()
}

fn rate(num_jobs: usize, seconds: &[f64]) -> Value {
    let rates: Vec<f64> = seconds
        .iter()
        .map(|seconds| (num_jobs as f64 / seconds).round())
        .collect();
    json!({ "jobs": num_jobs, "jobs_per_second": rates })
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
    let num_single = (num_jobs / 10).max(1);
    let batch_methods = [
        "store_batch",
        "unnest_returning_ids",
        "unnest_returning_rows",
        "copy_then_insert",
    ];
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); batch_methods.len()];
    for _round in 0..2 {
        for (method, times) in batch_methods.iter().zip(&mut seconds) {
            times.push(time_batches(method, num_jobs, batch_size).await);
        }
    }
    let mut report = serde_json::Map::new();
    for (method, times) in batch_methods.iter().zip(&seconds) {
        report.insert((*method).to_owned(), rate(num_jobs, times));
    }
    let single_methods = ["single", "single_values"];
    let mut single_seconds: Vec<Vec<f64>> = vec![Vec::new(); single_methods.len()];
    for _round in 0..2 {
        for (method, times) in single_methods.iter().zip(&mut single_seconds) {
            times.push(time_singles(method, num_single / 2).await);
        }
    }
    for (method, times) in single_methods.iter().zip(&single_seconds) {
        report.insert((*method).to_owned(), rate(num_single / 2, times));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({"batch_size": batch_size, "methods": report}))
            .expect("json")
    );
}
