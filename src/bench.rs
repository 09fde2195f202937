//! `bulwark bench queue`: how many jobs per second one node drains from the local queue on
//! the configured database. A measurement tool, not a test.

use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_config::Config;
use bulwark_store::{Backend, JobFilter, JobStatus, NewJob, Store};
use serde::Serialize;
use serde_json::json;

use crate::Service;
use crate::bench_measure::{ServerCpu, percentile, process_cpu_seconds};

/// What `bulwark bench queue` measures.
#[derive(Debug, Clone, Copy)]
pub struct QueueBenchParams {
    pub num_jobs: usize,
    pub texts_per_job: usize,
}

/// The result, printed as JSON.
#[derive(Debug, Serialize)]
pub struct QueueBenchReport {
    pub backend: &'static str,
    pub num_jobs: usize,
    pub texts_per_job: usize,
    pub concurrency: usize,
    pub insert_jobs_per_second: f64,
    pub drain_seconds: f64,
    pub jobs_per_second: f64,
    /// Claim to stored result, per job, in milliseconds.
    pub run_p50_ms: i64,
    pub run_p99_ms: i64,
    /// CPU of this process (the node, and this bench's polling) per drained job.
    pub node_cpu_ms_per_job: f64,
    /// CPU of the PostgreSQL server per drained job; `None` on SQLite (in process) or when the
    /// server is not on this machine.
    pub database_cpu_ms_per_job: Option<f64>,
    /// Transactions committed per drained job (PostgreSQL's `pg_stat_database`).
    pub commits_per_job: Option<f64>,
}

/// Fills the queue with `num_jobs` jobs, starts a node and times it draining them.
pub async fn queue(config: &Config, params: QueueBenchParams) -> anyhow::Result<QueueBenchReport> {
    let store = crate::service::open_store(config).await?;
    let texts: Vec<String> = (0..params.texts_per_job)
        .map(|index| format!("benchmark sentence {index}: the service was quick and pleasant"))
        .collect();
    let new_job = NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload: json!({ "texts": texts }),
        idempotency_key: None,
        request_id: None,
        trace_id: None,
        max_attempts: config.jobs.max_attempts,
    };
    let insert_started = Instant::now();
    for _ in 0..params.num_jobs {
        store
            .insert_job(&new_job)
            .await
            .context("failed to insert a benchmark job")?;
    }
    let insert_seconds = insert_started.elapsed().as_secs_f64();

    let drain_started = Instant::now();
    let cpu_before = process_cpu_seconds();
    let database_cpu_before = ServerCpu::read();
    let commits_before = committed_transactions(&store).await;
    let service = Service::start(config).await?;
    let deadline = drain_started + Duration::from_secs(600);
    loop {
        let counts = store.count_live_jobs().await?;
        let open: i64 = counts
            .iter()
            .filter(|count| count.status == "queued" || count.status == "running")
            .map(|count| count.count)
            .sum();
        if open == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{open} jobs still open after 600s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let node_cpu = process_cpu_seconds() - cpu_before;
    let database_cpu = ServerCpu::read().since(&database_cpu_before).database;
    service.shutdown().await?;
    // Read once the node's connections closed: a backend reports its counts when it exits.
    let commits = committed_transactions(&store).await;
    let per_job = |amount: f64| amount / params.num_jobs as f64;

    let mut run_ms = Vec::with_capacity(params.num_jobs);
    let mut filter = JobFilter {
        status: Some(JobStatus::Succeeded),
        limit: 1000,
        ..JobFilter::default()
    };
    loop {
        let page = store.list_jobs(&filter).await?;
        run_ms.extend(
            page.jobs
                .iter()
                .filter_map(|job| Some(job.finished_at_ms? - job.started_at_ms?)),
        );
        let Some(cursor) = page.next_cursor else {
            break;
        };
        filter.before_id = Some(cursor);
    }
    anyhow::ensure!(
        run_ms.len() >= params.num_jobs,
        "only {} of {} jobs succeeded",
        run_ms.len(),
        params.num_jobs
    );
    run_ms.sort_unstable();
    Ok(QueueBenchReport {
        backend: store.backend().as_str(),
        num_jobs: params.num_jobs,
        texts_per_job: params.texts_per_job,
        concurrency: config.jobs.concurrency,
        insert_jobs_per_second: params.num_jobs as f64 / insert_seconds,
        drain_seconds,
        jobs_per_second: params.num_jobs as f64 / drain_seconds,
        run_p50_ms: percentile(&run_ms, 0.5),
        run_p99_ms: percentile(&run_ms, 0.99),
        node_cpu_ms_per_job: per_job(node_cpu * 1000.0),
        database_cpu_ms_per_job: match store.backend() {
            Backend::Postgres => database_cpu.map(|seconds| per_job(seconds * 1000.0)),
            Backend::Sqlite => None,
        },
        commits_per_job: commits_before
            .zip(commits)
            .map(|(before, after)| per_job((after - before) as f64)),
    })
}

/// Returns the transactions committed so far in the current PostgreSQL database (every
/// session's, this bench's own polling included); `None` on SQLite.
async fn committed_transactions(store: &Store) -> Option<i64> {
    store.committed_transactions().await.ok().flatten()
}
