//! Draining, as orchestrators see it, on the real binary: SIGTERM under HTTP load turns
//! `/ready` to 503 `draining` at once while requests in flight complete, and a second signal
//! exits at once. Its own test binary, so no other test's processes compete for the CPU while
//! it measures how soon `/ready` answers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{JobFilter, JobStatus, NewJob};
use bulwark_test_support::eventually;
use serde_json::json;

/// What one request of the load below came to: when it was sent, and its status (`None`: it
/// found no listener or its connection broke).
struct Sent {
    at: std::time::Instant,
    status: Option<u16>,
}

/// Sends sentiment requests one after the other until `stop`, each on a fresh connection so
/// a closed listener shows as a refused connection, never as a broken keep-alive; counts the
/// answered ones in `num_answered`.
async fn sentiment_load(
    base_url: String,
    stop: tokio_util::sync::CancellationToken,
    num_answered: Arc<AtomicUsize>,
) -> Vec<Sent> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", common::TEST_ADMIN_KEY)
                    .parse()
                    .unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    let texts: Vec<String> = (0..100)
        .map(|index| format!("review {index}: good service, although the box was damaged"))
        .collect();
    let mut sent = Vec::new();
    while !stop.is_cancelled() {
        let at = std::time::Instant::now();
        let status = client
            .post(format!("{base_url}/v1/sentiment"))
            .json(&json!({ "texts": texts }))
            .send()
            .await
            .ok()
            .map(|response| response.status().as_u16());
        let refused = status.is_none();
        if !refused {
            num_answered.fetch_add(1, Ordering::Relaxed);
        }
        sent.push(Sent { at, status });
        if refused {
            break;
        }
    }
    sent
}

/// Proves a node under load shuts down as orchestrators expect on SIGTERM: every `/ready` sent
/// 100 ms or more after the signal answers 503 `draining` while the listener keeps serving
/// (two provider jobs of 3 s hold the drain open), every request sent before the signal
/// completes, only requests after the listener closed find it closed (none gets a 5xx), the
/// process exits 0 before `shutdown.timeout_ms` with the provider jobs finished, and it logged
/// how long it took to start and to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_drains_behind_a_draining_readiness() {
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let store = database.open().await;
    let deadline = Duration::from_secs(10);
    let served = common::serve(
        common::serve_command(&database.url)
            .env("BULWARK__JOBS__CONCURRENCY", "4")
            .env("BULWARK__SENTIMENT__WORKERS", "2")
            .env(
                "BULWARK__SHUTDOWN__TIMEOUT_MS",
                deadline.as_millis().to_string(),
            )
            // provider jobs that answer after 3 s: the drain waits for them, within the deadline
            .env("BULWARK__PROVIDERS__SIM__KIND", "simulated")
            .env("BULWARK__PROVIDERS__SIM__FAULTS__LATENCY_MS", "3000"),
    );
    for index in 0..2 {
        let payload = json!({"provider": "sim", "prompt": format!("question {index}")});
        store
            .insert_job(&NewJob::new("provider.complete", payload, 5))
            .await
            .unwrap();
    }
    for _ in 0..40 {
        store
            .insert_job(&NewJob::new(
                "sentiment.analyze",
                json!({"texts": ["fine", "awful", "great"]}),
                5,
            ))
            .await
            .unwrap();
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let num_answered = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(sentiment_load(
                served.base_url.clone(),
                stop.clone(),
                num_answered.clone(),
            ))
        })
        .collect();
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    eventually(Duration::from_secs(30), || async {
        let ready = probe
            .get(format!("{}/ready", served.base_url))
            .send()
            .await
            .ok()?;
        (ready.status() == 200).then_some(())
    })
    .await;
    let running = JobFilter {
        status: Some(JobStatus::Running),
        kind: Some("provider.complete".to_owned()),
        limit: 10,
        ..JobFilter::default()
    };
    eventually(Duration::from_secs(30), || async {
        let num_running = store.list_jobs(&running).await.unwrap().jobs.len();
        (num_running == 2).then_some(())
    })
    .await;
    // The load is under way: some requests answered, others in flight.
    let answered_before = num_answered.load(Ordering::Relaxed);
    eventually(Duration::from_secs(30), || async {
        (num_answered.load(Ordering::Relaxed) >= answered_before + 8).then_some(())
    })
    .await;

    let signalled = std::time::Instant::now();
    common::send_sigterm(&served.child);
    // Every probe for 400 ms, each on a fresh connection: when it was sent, and its answer.
    let mut probes = Vec::new();
    let mut retry_after = None;
    while signalled.elapsed() < Duration::from_millis(400) {
        let sent_after = signalled.elapsed();
        let response = probe
            .get(format!("{}/ready", served.base_url))
            .send()
            .await
            .expect("the listener stays open while the node drains");
        let status = response.status().as_u16();
        if status == 503 {
            retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["status"], "draining", "{body}");
        }
        probes.push((sent_after, status));
    }
    let ready_late: Vec<_> = probes
        .iter()
        .filter(|(sent_after, status)| *status != 503 && *sent_after >= Duration::from_millis(100))
        .collect();
    assert!(
        ready_late.is_empty(),
        "/ready still answered these (sent that long after SIGTERM): {ready_late:?}"
    );
    assert!(
        probes.iter().any(|(_, status)| *status == 503),
        "/ready never said draining: {probes:?}"
    );
    assert_eq!(retry_after.as_deref(), Some("5"));

    let exit = common::wait_for_exit(served.child).await;
    let stopped_after = signalled.elapsed();
    stop.cancel();
    assert!(exit.success(), "bulwark exits 0 after SIGTERM: {exit:?}");
    assert!(
        stopped_after < deadline,
        "exited {stopped_after:?} after SIGTERM, past the {deadline:?} deadline"
    );

    let mut num_before = 0;
    let mut num_refused = 0;
    for task in load {
        for sent in task.await.unwrap() {
            match sent.status {
                Some(status) => {
                    assert!(
                        status < 500,
                        "a request got {status} while the node drained"
                    );
                    assert_eq!(status, 200, "sentiment requests succeed until the end");
                }
                None => {
                    assert!(
                        sent.at > signalled,
                        "a request sent before SIGTERM did not complete"
                    );
                    num_refused += 1;
                }
            }
            num_before += usize::from(sent.at < signalled);
        }
    }
    assert!(num_before > 0, "the load ran before the signal");
    assert!(
        num_refused <= 4,
        "each load task stops at its first refusal"
    );

    // The log reader thread may still be reading the last lines the process wrote.
    let logs = eventually(Duration::from_secs(5), || async {
        let logs = served.logs.lock().unwrap().clone();
        logs.iter()
            .any(|line| line.contains("shutdown complete"))
            .then_some(logs)
    })
    .await;
    let logged = |message: &str, field: &str| {
        logs.iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|entry| entry["message"] == message)
            .and_then(|entry| entry[field].as_u64())
    };
    assert!(
        logged("bulwark is serving", "startup_ms").is_some(),
        "startup duration logged"
    );
    let shutdown_ms = logged("shutdown complete", "duration_ms").expect("shutdown duration logged");
    assert!(shutdown_ms < deadline.as_millis() as u64);
    let left_running = store
        .list_jobs(&JobFilter {
            status: Some(JobStatus::Running),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap()
        .jobs;
    assert!(left_running.is_empty(), "no job left running under a lease");
    let provider_jobs = store
        .list_jobs(&JobFilter {
            kind: Some("provider.complete".to_owned()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap()
        .jobs;
    assert!(
        provider_jobs
            .iter()
            .all(|job| job.status == JobStatus::Succeeded),
        "the drain let the running provider jobs finish: {provider_jobs:?}"
    );
}

/// Proves a second signal ends a shutdown at once: with jobs that would hold the drain for
/// many seconds, a second SIGTERM makes the process exit within a second, and every job is
/// back in the queue, its interrupted attempt not counted, no lease left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_hands_the_jobs_back() {
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let store = database.open().await;
    let served = common::serve(
        common::serve_command(&database.url)
            .env("BULWARK__JOBS__CONCURRENCY", "4")
            .env("BULWARK__SHUTDOWN__TIMEOUT_MS", "20000")
            // a provider that answers after a minute: the drain would wait out its deadline
            .env("BULWARK__PROVIDERS__SIM__KIND", "simulated")
            .env("BULWARK__PROVIDERS__SIM__FAULTS__LATENCY_MS", "60000")
            .env("BULWARK__PROVIDERS__SIM__ATTEMPT_TIMEOUT_MS", "120000")
            .env("BULWARK__PROVIDERS__SIM__CALL_DEADLINE_MS", "120000"),
    );
    let num_jobs = 4;
    for index in 0..num_jobs {
        let payload = json!({"provider": "sim", "prompt": format!("question {index}")});
        store
            .insert_job(&NewJob::new("provider.complete", payload, 5))
            .await
            .unwrap();
    }
    let running_filter = JobFilter {
        status: Some(JobStatus::Running),
        limit: 100,
        ..JobFilter::default()
    };
    eventually(Duration::from_secs(30), || async {
        let running = store.list_jobs(&running_filter).await.unwrap().jobs.len();
        (running == num_jobs).then_some(())
    })
    .await;

    common::send_sigterm(&served.child);
    let probe = reqwest::Client::new();
    eventually(Duration::from_secs(5), || async {
        let ready = probe
            .get(format!("{}/ready", served.base_url))
            .send()
            .await
            .ok()?;
        (ready.status() == 503).then_some(())
    })
    .await;
    let second = std::time::Instant::now();
    common::send_sigterm(&served.child);
    let exit = common::wait_for_exit(served.child).await;
    let exited_after = second.elapsed();

    assert!(
        exited_after < Duration::from_secs(1),
        "exited {exited_after:?} after the second signal"
    );
    assert_eq!(exit.code(), Some(1), "a forced exit is not a clean one");

    let jobs = store
        .list_jobs(&JobFilter {
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(jobs.len(), num_jobs, "no job lost");
    for job in &jobs {
        assert_eq!(
            job.status,
            JobStatus::Queued,
            "{} is back in the queue",
            job.id
        );
        assert!(job.lease_owner.is_none(), "{} keeps no lease", job.id);
        assert_eq!(
            job.attempts, 0,
            "{}: the interrupted attempt is not counted",
            job.id
        );
    }
}
