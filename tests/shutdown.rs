//! Graceful shutdown of the real binary: SIGTERM in the middle of a batch loses no job, the
//! node drains behind a `/ready` that says so, and a second signal exits at once.

mod common;

use std::time::Duration;

use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{JobFilter, JobStatus, NewJob};
use bulwark_test_support::eventually;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

/// Starts `bulwark serve` on port 0 and returns the child and its base URL, read from the
/// "bulwark is serving" log line.
fn spawn_bulwark(database_url: &str) -> (std::process::Child, String) {
    // Shutdown is under test, not the model: the lexicon engine keeps batches short.
    let served = common::serve(
        common::serve_command(database_url)
            .env("BULWARK__JOBS__CONCURRENCY", "4")
            .env("BULWARK__JOBS__POLL_INTERVAL_MS", "20")
            .env("BULWARK__SENTIMENT__WORKERS", "2")
            .env("BULWARK__SHUTDOWN__TIMEOUT_MS", "10000"),
    );
    (served.child, served.base_url)
}

/// Proves SIGTERM mid-batch exits 0 and leaves every job succeeded or queued again, none stuck
/// `running`, and that a restarted node then finishes the rest.
async fn sigterm_mid_batch_loses_nothing(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    // The whole batch is queued before the node starts, so SIGTERM always lands mid-batch.
    let texts: Vec<String> = (0..1000)
        .map(|index| {
            format!(
                "sentence {index} is rather good, not bad at all! The support team answered \
                 quickly, although the delivery was late and the box was damaged on arrival."
            )
        })
        .collect();
    let num_jobs = 60;
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    for _ in 0..num_jobs {
        store.insert_job(&sentiment_job(&texts)).await.unwrap();
    }
    let (mut child, _base_url) = spawn_bulwark(&database.url);
    let succeeded_filter = JobFilter {
        status: Some(JobStatus::Succeeded),
        limit: 1000,
        ..JobFilter::default()
    };
    eventually(Duration::from_secs(30), || async {
        let done = store.list_jobs(&succeeded_filter).await.unwrap().jobs.len();
        (done >= 5).then_some(())
    })
    .await;

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "bulwark exits 0 after SIGTERM: {exit:?}");

    let all = store
        .list_jobs(&JobFilter {
            limit: 1000,
            ..JobFilter::default()
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(all.len(), num_jobs);
    let num_succeeded = all
        .iter()
        .filter(|job| job.status == JobStatus::Succeeded)
        .count();
    let num_queued = all
        .iter()
        .filter(|job| job.status == JobStatus::Queued)
        .count();
    assert_eq!(
        num_succeeded + num_queued,
        num_jobs,
        "every job succeeded or is queued again"
    );
    assert!(
        all.iter().all(|job| job.lease_owner.is_none()),
        "no lease left behind"
    );
    assert!(
        num_queued > 0,
        "the batch was interrupted mid-way ({num_succeeded} succeeded)"
    );
    assert!(
        all.iter()
            .filter(|job| job.status == JobStatus::Queued)
            .all(|job| job.attempts == 0)
    );

    let (mut restarted, _) = spawn_bulwark(&database.url);
    eventually(Duration::from_secs(60), || async {
        let done = store.list_jobs(&succeeded_filter).await.unwrap().jobs.len();
        (done == num_jobs).then_some(())
    })
    .await;
    kill(Pid::from_raw(restarted.id() as i32), Signal::SIGTERM).unwrap();
    let exit = tokio::task::spawn_blocking(move || restarted.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_batch_loses_nothing_on_sqlite() {
    sigterm_mid_batch_loses_nothing(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_batch_loses_nothing_on_postgres() {
    sigterm_mid_batch_loses_nothing(TestBackend::Postgres).await;
}

/// What one request of the load below came to: when it was sent, and its status (`None`: it
/// found no listener or its connection broke).
struct Sent {
    at: std::time::Instant,
    status: Option<u16>,
}

/// Sends sentiment requests one after the other until `stop`, each on a fresh connection so
/// a closed listener shows as a refused connection, never as a broken keep-alive.
async fn sentiment_load(base_url: String, stop: tokio_util::sync::CancellationToken) -> Vec<Sent> {
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
    let texts: Vec<String> = (0..400)
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
        sent.push(Sent { at, status });
        if refused {
            break;
        }
    }
    sent
}

/// Proves a node under load shuts down as orchestrators expect on SIGTERM: `/ready` answers
/// 503 `draining` within 100 ms while the listener keeps serving, every request sent before
/// the signal completes, only requests after the listener closed find it closed (none gets a
/// 5xx), the process exits 0 before `shutdown.timeout_ms`, and it logged how long it took to
/// start and to stop.
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
            ),
    );
    for _ in 0..40 {
        store
            .insert_job(&sentiment_job(&["fine", "awful", "great"]))
            .await
            .unwrap();
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let load: Vec<_> = (0..4)
        .map(|_| tokio::spawn(sentiment_load(served.base_url.clone(), stop.clone())))
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
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = std::time::Instant::now();
    kill(Pid::from_raw(served.child.id() as i32), Signal::SIGTERM).unwrap();
    let (draining_after, retry_after) = loop {
        let response = probe
            .get(format!("{}/ready", served.base_url))
            .send()
            .await
            .expect("the listener stays open while the node drains");
        if response.status() == 503 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["status"], "draining", "{body}");
            break (signalled.elapsed(), retry_after);
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "/ready never said draining"
        );
    };
    assert!(
        draining_after < Duration::from_millis(100),
        "/ready answered 503 draining {draining_after:?} after SIGTERM"
    );
    assert_eq!(retry_after.as_deref(), Some("5"));

    let mut child = served.child;
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
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

    let logs = served.logs.lock().unwrap().clone();
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
        let mut new_job = sentiment_job(&[]);
        new_job.kind = "provider.complete".to_owned();
        new_job.payload = json!({"provider": "sim", "prompt": format!("question {index}")});
        store.insert_job(&new_job).await.unwrap();
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

    let pid = Pid::from_raw(served.child.id() as i32);
    kill(pid, Signal::SIGTERM).unwrap();
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
    kill(pid, Signal::SIGTERM).unwrap();
    let mut child = served.child;
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
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

/// A `sentiment.analyze` job of `texts`, as a client would submit it.
fn sentiment_job(texts: &[&str]) -> NewJob {
    NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload: json!({ "texts": texts }),
        idempotency_key: None,
        request_id: None,
        trace_id: None,
        max_attempts: 5,
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    }
}
