//! The database queue's wake-ups on PostgreSQL: a job queued by another process (any statement
//! that inserts local jobs) wakes this node's runner through `LISTEN bulwark_jobs`, without
//! waiting for its poll timer.

mod common;

use std::time::Duration;

use bulwark_store::testsuite::TestBackend;
use bulwark_store::{JobStatus, NewJob, StoreParams};
use bulwark_test_support::eventually;
use common::TestService;
use serde_json::json;

/// Proves a job inserted straight into the table by another connection (as another node's
/// intake would) runs within seconds on a node whose poll timer is ten minutes: the insert's
/// notification woke the runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_elsewhere_wakes_the_runner() {
    let service = TestService::start_with(TestBackend::Postgres, |config| {
        config.jobs.poll_interval_ms = 600_000;
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
    })
    .await;
    // Two jobs, one after the other: each must be woken for, the poll timer never fires.
    let other_node = bulwark_store::Store::open(&StoreParams {
        url: service.database.url.clone(),
        max_connections: 2,
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .expect("second connection pool");
    let new_job = NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload: json!({"texts": ["queued by another node"]}),
        idempotency_key: None,
        request_id: None,
        trace_id: None,
        max_attempts: 3,
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    };
    for _ in 0..2 {
        let job_id = other_node
            .insert_job(&new_job)
            .await
            .expect("job inserted")
            .job()
            .id
            .clone();
        let finished = eventually(Duration::from_secs(10), || async {
            let job = other_node.get_job(&job_id).await.expect("job read")?;
            job.status.is_terminal().then_some(job)
        })
        .await;
        assert_eq!(finished.status, JobStatus::Succeeded, "{finished:?}");
    }
    service.service.shutdown().await.expect("node stops");
}
