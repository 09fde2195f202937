//! A zero-downtime rolling upgrade of two nodes sharing PostgreSQL, as docs/operations/
//! upgrades.md describes it: a load balancer routes by `/ready`, one node is stopped with
//! SIGTERM and started again while clients keep submitting jobs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bulwark_store::JobFilter;
use bulwark_store::JobStatus;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_test_support::eventually;
use serde_json::json;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

/// Starts one `bulwark serve` node on the shared database.
fn start_node(database_url: &str, name: &str) -> common::Served {
    common::serve(
        common::serve_command(database_url)
            .env("BULWARK__JOBS__NODE_ID", name)
            .env("BULWARK__JOBS__CONCURRENCY", "4")
            .env("BULWARK__JOBS__POLL_INTERVAL_MS", "20")
            .env("BULWARK__SENTIMENT__WORKERS", "1")
            .env("BULWARK__SHUTDOWN__TIMEOUT_MS", "8000"),
    )
}

/// The nodes a load balancer knows, and which of them its last `/ready` probe found ready.
#[derive(Default)]
struct Balancer {
    backends: RwLock<Vec<(String, bool)>>,
    next: AtomicUsize,
}

impl Balancer {
    /// Returns the next ready backend, round robin.
    async fn pick(&self) -> Option<String> {
        let backends = self.backends.read().await;
        let ready: Vec<&String> = backends
            .iter()
            .filter(|(_, ready)| *ready)
            .map(|(url, _)| url)
            .collect();
        if ready.is_empty() {
            return None;
        }
        Some(ready[self.next.fetch_add(1, Ordering::Relaxed) % ready.len()].clone())
    }
}

/// What the balancer's clients saw: the jobs accepted, and every answer that was not a 202.
#[derive(Default)]
struct Seen {
    accepted: Vec<String>,
    refusals: Vec<String>,
    bad_answers: Vec<String>,
}

/// Probes every backend's `/ready` every 50 ms, as a load balancer's health check does. A 503
/// must say when to come back (`Retry-After`).
async fn probe_readiness(
    balancer: Arc<Balancer>,
    stop: CancellationToken,
    seen: Arc<std::sync::Mutex<Seen>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    while !stop.is_cancelled() {
        let urls: Vec<String> = balancer
            .backends
            .read()
            .await
            .iter()
            .map(|(url, _)| url.clone())
            .collect();
        for url in urls {
            let ready = match client.get(format!("{url}/ready")).send().await {
                Ok(response) if response.status() == 503 => {
                    if response.headers().get("retry-after").is_none() {
                        seen.lock()
                            .unwrap()
                            .bad_answers
                            .push(format!("{url}/ready: 503 without Retry-After"));
                    }
                    false
                }
                Ok(response) => response.status() == 200,
                Err(_) => false,
            };
            let mut backends = balancer.backends.write().await;
            if let Some(entry) = backends.iter_mut().find(|(known, _)| *known == url) {
                entry.1 = ready;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits jobs through the balancer until `stop`. A refused connection (a node that stopped
/// between two probes) is retried on the next backend, as a balancer retries a connect
/// failure; any answer but 202 is recorded.
async fn submit_jobs(
    balancer: Arc<Balancer>,
    stop: CancellationToken,
    seen: Arc<std::sync::Mutex<Seen>>,
) {
    let client = common::admin_client();
    let mut index = 0;
    while !stop.is_cancelled() {
        let Some(url) = balancer.pick().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        index += 1;
        let sent = client
            .post(format!("{url}/v1/jobs"))
            .json(&json!({
                "kind": "sentiment.analyze",
                "payload": {"texts": [format!("upgrade review {index}: quite good")]},
            }))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 202 => {
                let body: serde_json::Value = response.json().await.unwrap();
                seen.lock()
                    .unwrap()
                    .accepted
                    .push(body["id"].as_str().unwrap().to_owned());
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                seen.lock()
                    .unwrap()
                    .bad_answers
                    .push(format!("{url}: {status} {text}"));
            }
            Err(error) if error.is_connect() => {
                seen.lock().unwrap().refusals.push(url);
            }
            Err(error) => seen
                .lock()
                .unwrap()
                .bad_answers
                .push(format!("{url}: {error}")),
        }
    }
}

/// Sends SIGTERM to a node and waits for it to exit; returns whether it exited 0.
async fn stop_node(served: common::Served) -> bool {
    common::send_sigterm(&served.child);
    common::wait_for_exit(served.child).await.success()
}

/// Proves a rolling upgrade loses nothing and fails no client: while jobs are submitted
/// through a balancer that routes by `/ready`, node A is stopped (SIGTERM) and a new node A
/// started on the same database, then the same for B. Every submission is accepted (a 202,
/// or a refused connection the balancer retries elsewhere), no answer is a 5xx, every
/// accepted job succeeds exactly once, and both stopped nodes exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_loses_no_job_and_fails_no_request() {
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let store = database.open().await;
    let node_a = start_node(&database.url, "upgrade-a");
    let node_b = start_node(&database.url, "upgrade-b");
    let balancer = Arc::new(Balancer::default());
    *balancer.backends.write().await = vec![
        (node_a.base_url.clone(), false),
        (node_b.base_url.clone(), false),
    ];
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let stop = CancellationToken::new();
    let prober = tokio::spawn(probe_readiness(
        balancer.clone(),
        stop.clone(),
        seen.clone(),
    ));
    let submitters: Vec<_> = (0..4)
        .map(|_| tokio::spawn(submit_jobs(balancer.clone(), stop.clone(), seen.clone())))
        .collect();
    let accepted_at_least = |count: usize| {
        let seen = seen.clone();
        async move {
            eventually(Duration::from_secs(30), || async {
                (seen.lock().unwrap().accepted.len() >= count).then_some(())
            })
            .await
        }
    };
    accepted_at_least(100).await;

    let mut exits = Vec::new();
    let mut replacements = Vec::new();
    for (old, name) in [(node_a, "upgrade-a2"), (node_b, "upgrade-b2")] {
        let old_url = old.base_url.clone();
        exits.push(stop_node(old).await);
        let new = start_node(&database.url, name);
        {
            let mut backends = balancer.backends.write().await;
            backends.retain(|(url, _)| *url != old_url);
            backends.push((new.base_url.clone(), false));
        }
        let before = seen.lock().unwrap().accepted.len();
        accepted_at_least(before + 100).await;
        replacements.push(new);
    }
    stop.cancel();
    for submitter in submitters {
        submitter.await.unwrap();
    }
    prober.await.unwrap();

    let (accepted, bad_answers) = {
        let seen = seen.lock().unwrap();
        (seen.accepted.clone(), seen.bad_answers.clone())
    };
    assert!(
        bad_answers.is_empty(),
        "clients saw errors: {bad_answers:?}"
    );
    assert_eq!(exits, [true, true], "both stopped nodes exit 0");
    let succeeded_filter = JobFilter {
        status: Some(JobStatus::Succeeded),
        limit: 10_000,
        ..JobFilter::default()
    };
    let succeeded = eventually(Duration::from_secs(60), || async {
        let jobs = store.list_jobs(&succeeded_filter).await.unwrap().jobs;
        (jobs.len() >= accepted.len()).then_some(jobs)
    })
    .await;
    let mut succeeded_ids: Vec<&str> = succeeded.iter().map(|job| job.id.as_str()).collect();
    succeeded_ids.sort_unstable();
    let mut accepted_ids: Vec<&str> = accepted.iter().map(String::as_str).collect();
    accepted_ids.sort_unstable();
    assert_eq!(
        succeeded_ids, accepted_ids,
        "every accepted job succeeded, none other"
    );
    assert!(
        succeeded.iter().all(|job| job.attempts == 1),
        "each job ran exactly once"
    );
    for node in replacements {
        assert!(stop_node(node).await);
    }
}
