//! `bulwark-bench queue`: how many jobs per second one node (or several, `--nodes`) drains
//! from the local queue on the configured database; `bulwark-bench enqueue`: how many jobs per
//! second are stored one at a time vs in batches. Measurement tools, not tests.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_config::Config;
use bulwark_store::{Backend, JobFilter, JobRoute, JobStatus, NewJob, Store};
use serde::Serialize;
use serde_json::json;

use crate::measure::{ServerCpu, cpu_seconds_of_pid, percentile, process_cpu_seconds};
use bulwark::Service;

/// What `bulwark-bench queue` measures.
#[derive(Debug, Clone)]
pub struct QueueBenchParams {
    pub num_jobs: usize,
    pub texts_per_job: usize,
    /// Nodes draining together: this process and `num_nodes - 1` child processes.
    pub num_nodes: usize,
    /// The config file this process read, handed to the extra nodes (they inherit the
    /// environment).
    pub config_file: Option<std::path::PathBuf>,
}

/// The result, printed as JSON.
#[derive(Debug, Serialize)]
pub struct QueueBenchReport {
    pub backend: &'static str,
    pub num_jobs: usize,
    pub texts_per_job: usize,
    pub num_nodes: usize,
    /// Per node.
    pub concurrency: usize,
    pub insert_jobs_per_second: f64,
    pub drain_seconds: f64,
    pub jobs_per_second: f64,
    /// Claim to stored result, per job, in milliseconds.
    pub run_p50_ms: i64,
    pub run_p99_ms: i64,
    /// CPU of the nodes (this process, with this bench's polling, and the extra nodes' processes)
    /// per drained job.
    pub node_cpu_ms_per_job: f64,
    /// CPU of the PostgreSQL server per drained job; `None` on SQLite (in process) or when the
    /// server is not on this machine.
    pub database_cpu_ms_per_job: Option<f64>,
    /// Transactions committed per drained job (PostgreSQL's `pg_stat_database`).
    pub commits_per_job: Option<f64>,
    /// Jobs that ran more than once (claimed by two nodes, or claimed again after a lease
    /// expired): 0 when the nodes' claims are disjoint.
    pub num_jobs_run_twice: usize,
}

/// Fills the queue with `num_jobs` jobs, starts a node and times it draining them.
pub async fn queue(config: &Config, params: QueueBenchParams) -> anyhow::Result<QueueBenchReport> {
    let store = bulwark::service::open_store(config).await?;
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
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    };
    // The queue is filled in batches of 1,000 (one statement each): `bench enqueue` measures
    // inserts; this bench measures the drain.
    let insert_started = Instant::now();
    let batch = vec![new_job; 1_000];
    let mut num_inserted = 0;
    while num_inserted < params.num_jobs {
        let size = (params.num_jobs - num_inserted).min(batch.len());
        store
            .insert_job_batch(&batch[..size], JobRoute::Local)
            .await
            .context("failed to insert benchmark jobs")?;
        num_inserted += size;
    }
    let insert_seconds = insert_started.elapsed().as_secs_f64();

    let drain_started = Instant::now();
    let drain_started_ms = bulwark_core::now_ms();
    let cpu_before = process_cpu_seconds();
    let database_cpu_before = ServerCpu::read();
    let commits_before = committed_transactions(&store).await;
    let extra_nodes = ExtraNodes::start(
        params.num_nodes.saturating_sub(1),
        params.config_file.as_deref(),
    )?;
    let service = Service::start(config).await?;
    let deadline = drain_started + Duration::from_secs(600);
    loop {
        let counts = store.count_live_jobs(bulwark_core::now_ms()).await?;
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
        // Counting the live jobs walks every queued row (about 6 ms over 20,000 on this
        // machine): polled every 10 ms it took a third of a core from the run it measures.
        // The drain's end is read from the jobs themselves below, so the poll can be rare.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let node_cpu = process_cpu_seconds() - cpu_before + extra_nodes.cpu_seconds();
    let database_cpu = ServerCpu::read().since(&database_cpu_before).database;
    extra_nodes.stop()?;
    service.shutdown().await?;
    // Read once the node's connections closed: a backend reports its counts when it exits.
    let commits = committed_transactions(&store).await;
    let per_job = |amount: f64| amount / params.num_jobs as f64;

    let mut run_ms = Vec::with_capacity(params.num_jobs);
    let mut last_finished_ms = drain_started_ms;
    let mut num_jobs_run_twice = 0;
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
        num_jobs_run_twice += page.jobs.iter().filter(|job| job.attempts > 1).count();
        last_finished_ms = page
            .jobs
            .iter()
            .filter_map(|job| job.finished_at_ms)
            .fold(last_finished_ms, i64::max);
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
    // From the node's start to the last job's end, as the jobs' rows record it.
    let drain_seconds = (last_finished_ms - drain_started_ms) as f64 / 1000.0;
    Ok(QueueBenchReport {
        backend: store.backend().as_str(),
        num_jobs: params.num_jobs,
        texts_per_job: params.texts_per_job,
        num_nodes: params.num_nodes,
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
        num_jobs_run_twice,
    })
}

/// The extra nodes of `queue --nodes`: processes of this binary running `queue-node` with
/// the same configuration (their HTTP listeners on free ports), stopped by closing their stdin.
struct ExtraNodes {
    children: Vec<Child>,
}

impl ExtraNodes {
    fn start(num_nodes: usize, config_file: Option<&Path>) -> anyhow::Result<ExtraNodes> {
        let exe = std::env::current_exe().context("failed to find this binary")?;
        let mut nodes = ExtraNodes {
            children: Vec::with_capacity(num_nodes),
        };
        for _ in 0..num_nodes {
            let mut command = Command::new(&exe);
            if let Some(file) = config_file {
                command.arg("--config").arg(file);
            }
            let child = command
                .arg("queue-node")
                .env("BULWARK__HTTP__ADDR", "127.0.0.1:0")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .context("failed to start an extra node")?;
            nodes.children.push(child);
        }
        Ok(nodes)
    }

    /// CPU the extra nodes used so far, read before they are stopped.
    fn cpu_seconds(&self) -> f64 {
        self.children
            .iter()
            .map(|child| cpu_seconds_of_pid(child.id()))
            .sum()
    }

    /// Closes each node's stdin and waits for it to shut down.
    fn stop(mut self) -> anyhow::Result<()> {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        for child in &mut self.children {
            let status = child.wait().context("failed to wait for an extra node")?;
            anyhow::ensure!(status.success(), "an extra node exited with {status}");
        }
        self.children.clear();
        Ok(())
    }
}

impl Drop for ExtraNodes {
    /// A bench that failed half way does not leave nodes running.
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `bulwark-bench queue-node`: runs a node on the configuration until stdin closes (the
/// parent `queue --nodes` closes it when the queue is drained), then shuts it down.
pub async fn run_extra_node(config: &Config) -> anyhow::Result<()> {
    let service = Service::start(config).await?;
    tokio::task::spawn_blocking(|| {
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
    })
    .await?;
    service.shutdown().await?;
    Ok(())
}

/// Returns the transactions committed so far in the current PostgreSQL database (every
/// session's, this bench's own polling included); `None` on SQLite.
async fn committed_transactions(store: &Store) -> Option<i64> {
    store.committed_transactions().await.ok().flatten()
}

/// What `bulwark-bench enqueue` measures.
#[derive(Debug, Clone, clap::Args)]
pub struct EnqueueBenchArgs {
    /// Jobs stored in batches through the store.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Jobs stored one at a time through the store (each its own statement and commit).
    #[arg(long, default_value_t = 10_000)]
    pub single_jobs: usize,
    /// Jobs per batch.
    #[arg(long, default_value_t = 1_000)]
    pub batch_size: usize,
    /// Jobs sent in batches through `POST /v1/jobs/batch` of a node started here, one request
    /// at a time, as `bulwark enqueue` sends them; 0 skips this phase.
    #[arg(long, default_value_t = 20_000)]
    pub http_jobs: usize,
    /// The phases run in this many interleaved rounds (single, batch, HTTP, then again), each
    /// with its share of the jobs, so a noisy machine weighs on every phase alike.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

/// One phase's rate.
#[derive(Debug, Serialize)]
pub struct EnqueueRate {
    pub num_jobs: usize,
    pub seconds: f64,
    pub jobs_per_second: f64,
}

impl EnqueueRate {
    fn new(num_jobs: usize, seconds: f64) -> EnqueueRate {
        EnqueueRate {
            num_jobs,
            seconds,
            jobs_per_second: num_jobs as f64 / seconds,
        }
    }
}

/// The result of `bulwark-bench enqueue`, printed as JSON.
#[derive(Debug, Serialize)]
pub struct EnqueueBenchReport {
    pub backend: &'static str,
    pub batch_size: usize,
    pub rounds: usize,
    /// Bytes of each job's payload, as stored.
    pub payload_bytes: usize,
    /// `Store::insert_job`, one job per statement and commit.
    pub single: EnqueueRate,
    /// `Store::insert_job_batch`, one statement per batch.
    pub batch: EnqueueRate,
    /// `batch` over `single` jobs/s.
    pub batch_over_single: f64,
    /// `POST /v1/jobs/batch`: HTTP, strict JSON, per-job validation and the same insert.
    pub http_batch: Option<EnqueueRate>,
    pub http_batch_over_single: Option<f64>,
}

/// Returns the `sentiment.analyze` job a benchmark stores, under an idempotency key (the
/// unique index is part of the cost).
fn bench_job(key: String, max_attempts: u32) -> NewJob {
    NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload: json!({ "texts": ["benchmark sentence: the service was quick and pleasant"] }),
        idempotency_key: Some(key),
        request_id: Some("bench-enqueue".to_owned()),
        trace_id: None,
        max_attempts,
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    }
}

/// Stores jobs one at a time, in batches through the store, and (unless `http_jobs` is 0) in
/// batches over HTTP, in interleaved rounds, all under fresh idempotency keys. The jobs stay
/// queued: run it on a scratch database (`make bench-enqueue` does).
pub async fn enqueue(
    config: &Config,
    args: &EnqueueBenchArgs,
) -> anyhow::Result<EnqueueBenchReport> {
    anyhow::ensure!(
        args.batch_size > 0 && args.rounds > 0,
        "--batch-size and --rounds must be at least 1"
    );
    let store = bulwark::service::open_store(config).await?;
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let node_opt = match args.http_jobs {
        0 => None,
        _ => Some(BenchNode::start(config, &run_id).await?),
    };
    let share = |num_jobs: usize| num_jobs / args.rounds;
    let (mut single_seconds, mut batch_seconds, mut http_seconds) = (0.0, 0.0, 0.0);
    for round in 0..args.rounds {
        let prefix = format!("bench-{run_id}-{round}");
        let started = Instant::now();
        for index in 0..share(args.single_jobs) {
            let new_job = bench_job(format!("{prefix}-single-{index}"), config.jobs.max_attempts);
            store
                .insert_job(&new_job)
                .await
                .context("failed to insert a benchmark job")?;
        }
        single_seconds += started.elapsed().as_secs_f64();
        let jobs: Vec<NewJob> = (0..share(args.jobs))
            .map(|index| bench_job(format!("{prefix}-batch-{index}"), config.jobs.max_attempts))
            .collect();
        batch_seconds += time_store_batches(&store, &jobs, args.batch_size).await?;
        if let Some(node) = &node_opt {
            let bodies = http_bodies(&prefix, share(args.http_jobs), args.batch_size);
            http_seconds += node.time_batches(bodies).await?;
        }
    }
    if let Some(node) = node_opt {
        node.service.shutdown().await?;
    }
    let single = EnqueueRate::new(share(args.single_jobs) * args.rounds, single_seconds);
    let batch = EnqueueRate::new(share(args.jobs) * args.rounds, batch_seconds);
    let http_batch = (args.http_jobs > 0)
        .then(|| EnqueueRate::new(share(args.http_jobs) * args.rounds, http_seconds));
    let payload_bytes = bench_job(String::new(), 0).payload.to_string().len();
    Ok(EnqueueBenchReport {
        backend: store.backend().as_str(),
        batch_size: args.batch_size,
        rounds: args.rounds,
        payload_bytes,
        batch_over_single: batch.jobs_per_second / single.jobs_per_second,
        http_batch_over_single: http_batch
            .as_ref()
            .map(|http| http.jobs_per_second / single.jobs_per_second),
        single,
        batch,
        http_batch,
    })
}

/// Times `Store::insert_job_batch` over `jobs`, in batches of `batch_size`; returns seconds.
async fn time_store_batches(
    store: &Store,
    jobs: &[NewJob],
    batch_size: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    for chunk in jobs.chunks(batch_size) {
        let outcomes = store
            .insert_job_batch(chunk, JobRoute::Local)
            .await
            .context("failed to insert a benchmark batch")?;
        anyhow::ensure!(
            outcomes.iter().all(|outcome| outcome.is_created()),
            "a benchmark batch found existing jobs"
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Returns the bodies of `POST /v1/jobs/batch` for `num_jobs` jobs, `batch_size` a body.
fn http_bodies(prefix: &str, num_jobs: usize, batch_size: usize) -> Vec<String> {
    (0..num_jobs)
        .collect::<Vec<_>>()
        .chunks(batch_size)
        .map(|chunk| {
            let jobs: Vec<serde_json::Value> = chunk
                .iter()
                .map(|index| {
                    let job = bench_job(format!("{prefix}-http-{index}"), 0);
                    json!({"kind": job.kind, "payload": job.payload,
                        "idempotency_key": job.idempotency_key})
                })
                .collect();
            json!({ "jobs": jobs }).to_string()
        })
        .collect()
}

/// A node on a free port with its job runner stopped, so it does not run the benchmark's
/// jobs while they arrive, and a key to reach it.
struct BenchNode {
    service: Service,
    client: reqwest::Client,
    key: String,
}

impl BenchNode {
    async fn start(config: &Config, run_id: &str) -> anyhow::Result<BenchNode> {
        let mut config = config.clone();
        config.http.addr = "127.0.0.1:0".to_owned();
        let service = Service::start(&config).await?;
        let key = service
            .auth
            .authenticator
            .create_key(&bulwark_auth::NewKey {
                name: format!("bench-enqueue-{run_id}"),
                scopes: bulwark_auth::Scopes::new(&[bulwark_auth::Scope::Admin]),
                expires_at_ms: None,
                daily_provider_calls: None,
            })
            .await
            .context("failed to make the benchmark's api key")?
            .token;
        let client = reqwest::Client::new();
        let stopped = client
            .post(format!(
                "{}/v1/ops/supervisors/root.jobs/stop",
                service.base_url
            ))
            .bearer_auth(&key)
            .send()
            .await?;
        anyhow::ensure!(
            stopped.status().is_success(),
            "failed to stop the job runner: {}",
            stopped.status()
        );
        Ok(BenchNode {
            service,
            client,
            key,
        })
    }

    /// Sends the bodies one request at a time; returns seconds.
    async fn time_batches(&self, bodies: Vec<String>) -> anyhow::Result<f64> {
        let endpoint = format!("{}/v1/jobs/batch", self.service.base_url);
        let started = Instant::now();
        for body in bodies {
            let response = self
                .client
                .post(&endpoint)
                .bearer_auth(&self.key)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let answer: serde_json::Value = response.json().await.unwrap_or_default();
            anyhow::ensure!(
                status.is_success() && answer["counts"]["invalid"] == 0,
                "a benchmark batch was refused: {status} {answer}"
            );
        }
        Ok(started.elapsed().as_secs_f64())
    }
}
