//! A job's attempt history, run against both SQLite and the real PostgreSQL.

use std::time::Duration;

use bulwark_core::now_ms;
use bulwark_store::on_both_backends;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{
    AttemptRecord, JobFailure, JobStatus, JobTransport, LocalQueue, LocalQueueParams, NewJob,
    OutcomeSink, Store,
};
use serde_json::json;

fn queue(store: &Store, owner: &str, lease: Duration) -> LocalQueue {
    LocalQueue::new(
        store.clone(),
        LocalQueueParams {
            owner: owner.to_owned(),
            lease,
            gates: Vec::new(),
        },
    )
}

fn retry_now(code: &str) -> JobFailure {
    JobFailure {
        code: code.to_owned(),
        message: format!("{code} happened"),
        retry_at_ms: Some(now_ms()),
        final_status: JobStatus::Dead,
        refund_attempt: false,
    }
}

/// Returns (attempt, outcome, node, error code) of each attempt.
fn summary(history: &[AttemptRecord]) -> Vec<(i32, &str, Option<&str>, Option<&str>)> {
    history
        .iter()
        .map(|record| {
            (
                record.attempt,
                record.outcome.as_str(),
                record.node.as_deref(),
                record.error_code.as_deref(),
            )
        })
        .collect()
}

/// Proves each attempt is kept with its node, times, outcome and error: two retried attempts
/// on two nodes, then the one that succeeded; an attempt whose node died shows as `lost` once
/// another node claimed the job; a refunded attempt (the node had no room) is not history.
async fn attempts_are_kept_with_node_outcome_and_error(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let new_job = NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload: json!({"texts": ["history"]}),
        idempotency_key: None,
        request_id: None,
        trace_id: None,
        max_attempts: 5,
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    };
    let job_id = store.insert_job(&new_job).await.unwrap().job().id.clone();
    let node_a = queue(&store, "node-a", Duration::from_secs(60));
    let node_b = queue(&store, "node-b", Duration::from_millis(1));

    let first = node_a.claim(1).await.unwrap().remove(0);
    node_a
        .fail(&first, &retry_now("UPSTREAM_TIMEOUT"))
        .await
        .unwrap()
        .expect("held");
    let refunded = node_a.claim(1).await.unwrap().remove(0);
    let overloaded = JobFailure {
        refund_attempt: true,
        ..retry_now("OVERLOADED")
    };
    node_a
        .fail(&refunded, &overloaded)
        .await
        .unwrap()
        .expect("held");
    let second = node_b.claim(1).await.unwrap().remove(0);
    node_b
        .fail(&second, &retry_now("INTERNAL_ERROR"))
        .await
        .unwrap()
        .expect("held");
    // The third attempt's node dies: its 1 ms lease expires and node A claims the job again.
    let third = node_b.claim(1).await.unwrap().remove(0);
    assert_eq!(third.attempts, 3);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fourth = node_a.claim(1).await.unwrap().remove(0);
    assert_eq!(fourth.attempts, 4);
    let running = store.get_job(&job_id).await.unwrap().unwrap();
    assert_eq!(
        summary(&store.job_attempts(&running).await.unwrap()),
        [
            (1, "retried", Some("node-a"), Some("UPSTREAM_TIMEOUT")),
            (2, "retried", Some("node-b"), Some("INTERNAL_ERROR")),
            (3, "lost", None, None),
            (4, "running", Some("node-a"), None),
        ]
    );
    node_a
        .complete(&fourth, &json!({"ok": true}))
        .await
        .unwrap()
        .expect("held");
    let finished = store.get_job(&job_id).await.unwrap().unwrap();
    let history = store.job_attempts(&finished).await.unwrap();
    assert_eq!(history[3].outcome, "succeeded");
    assert_eq!(history[3].finished_at_ms, finished.finished_at_ms);
    assert!(history[0].started_at_ms.unwrap() <= history[0].finished_at_ms.unwrap());
    assert_eq!(
        history[1].error_message.as_deref(),
        Some("INTERNAL_ERROR happened")
    );
}

on_both_backends!(
    attempts_are_kept_with_node_outcome_and_error_on,
    attempts_are_kept_with_node_outcome_and_error
);
