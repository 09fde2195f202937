//! Graceful shutdown of the real binary: SIGTERM in the middle of a batch loses no job.

mod common;

use std::time::Duration;

use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{JobFilter, JobStatus, NewJob};
use bulwark_test_support::eventually;
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
        store
            .insert_job(&NewJob::new(
                "sentiment.analyze",
                json!({ "texts": texts }),
                5,
            ))
            .await
            .unwrap();
    }
    let (child, _base_url) = spawn_bulwark(&database.url);
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

    common::send_sigterm(&child);
    let exit = common::wait_for_exit(child).await;
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

    let (restarted, _) = spawn_bulwark(&database.url);
    eventually(Duration::from_secs(60), || async {
        let done = store.list_jobs(&succeeded_filter).await.unwrap().jobs.len();
        (done == num_jobs).then_some(())
    })
    .await;
    common::send_sigterm(&restarted);
    let exit = common::wait_for_exit(restarted).await;
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
