//! Node membership in the store, against both SQLite and the real PostgreSQL: heartbeats, the
//! fencing of a silent node with early reclaim of its leases, and the fencing of outcomes by
//! lease owner and attempt, so a node that was only slow never stores a stale attempt.

use std::time::Duration;

use bulwark_core::now_ms;
use bulwark_store::on_both_backends;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{Heartbeat, JobStatus, LeaseRef, NewJob, NodeRegistration, Store};
use bulwark_test_support::eventually;
use serde_json::json;

fn registration(node_id: &str, incarnation: &str) -> NodeRegistration {
    NodeRegistration {
        node_id: node_id.to_owned(),
        incarnation: incarnation.to_owned(),
        version: "0.1.0".to_owned(),
    }
}

/// Fences every node silent for more than `dead_after_ms`, as `by`, once one is found.
async fn fence_when_silent(
    store: &Store,
    by: &str,
    dead_after_ms: i64,
) -> Vec<bulwark_store::FencedNode> {
    eventually(Duration::from_secs(10), || async {
        let fenced = store.fence_silent_nodes(by, dead_after_ms).await.unwrap();
        (!fenced.is_empty()).then_some(fenced)
    })
    .await
}

/// Proves a silent node is fenced by a live one and its running job's lease expires at once:
/// the live node claims it long before the lease ends, the silent node's heartbeat is refused
/// and names who fenced it, its late outcome is refused, and it registers again afresh.
async fn silent_node_is_fenced_and_its_jobs_reclaimed(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    store
        .register_node(&registration("node-a", "a-1"))
        .await
        .unwrap();
    store
        .register_node(&registration("node-b", "b-1"))
        .await
        .unwrap();
    let job = store
        .insert_job(&NewJob::new(
            "sentiment.analyze",
            json!({"texts": ["x"]}),
            5,
        ))
        .await
        .unwrap()
        .job()
        .clone();
    let hour_from_now = now_ms() + 3_600_000;
    let held = store.claim_jobs("node-b", hour_from_now, 10).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        store.claim_jobs("node-a", hour_from_now, 10).await.unwrap(),
        vec![],
        "node-b's lease is live for an hour"
    );

    // node-a keeps beating, node-b is silent: fenced once 200 ms passed, with its job.
    assert_eq!(
        store.heartbeat_node("node-a", "a-1").await.unwrap(),
        Heartbeat::Alive
    );
    let fenced = fence_when_silent(&store, "node-a", 200).await;
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    assert_eq!(fenced[0].node_id, "node-b");
    assert_eq!(fenced[0].num_jobs_reclaimed, 1);
    assert!(fenced[0].silent_for_ms > 200, "{fenced:?}");
    assert_eq!(
        store.fence_silent_nodes("node-a", 200).await.unwrap(),
        vec![],
        "a node is fenced once"
    );

    let reclaimed = store.claim_jobs("node-a", hour_from_now, 10).await.unwrap();
    assert_eq!(
        reclaimed.len(),
        1,
        "the fenced node's job is claimable at once"
    );
    assert_eq!(reclaimed[0].id, job.id);
    assert_eq!(reclaimed[0].attempts, 2);

    assert_eq!(
        store.heartbeat_node("node-b", "b-1").await.unwrap(),
        Heartbeat::Fenced {
            fenced_by_opt: Some("node-a".to_owned())
        }
    );
    assert_eq!(
        store
            .complete_job(LeaseRef::of(&held[0], "node-b"), &json!({"stale": true}))
            .await
            .unwrap(),
        None,
        "the fenced node's outcome is refused"
    );
    store
        .register_node(&registration("node-b", "b-2"))
        .await
        .unwrap();
    assert_eq!(
        store.heartbeat_node("node-b", "b-2").await.unwrap(),
        Heartbeat::Alive
    );
    assert!(matches!(
        store.heartbeat_node("node-b", "b-1").await.unwrap(),
        Heartbeat::Fenced { .. }
    ));
    let finished = store
        .complete_job(LeaseRef::of(&reclaimed[0], "node-a"), &json!({"ok": true}))
        .await
        .unwrap()
        .expect("node-a holds the reclaimed job");
    assert_eq!(finished.status, JobStatus::Succeeded);
    assert_eq!(finished.result, Some(json!({"ok": true})));

    let nodes = store.list_nodes().await.unwrap();
    let node_b = nodes.iter().find(|node| node.node_id == "node-b").unwrap();
    assert_eq!(
        (node_b.state.as_str(), node_b.incarnation.as_str()),
        ("alive", "b-2")
    );
    assert_eq!(node_b.num_jobs_reclaimed, 1);
    assert!(store.leave_node("node-a", "a-1").await.unwrap());
    let nodes = store.list_nodes().await.unwrap();
    let node_a = nodes.iter().find(|node| node.node_id == "node-a").unwrap();
    assert_eq!(node_a.state, "left");
}

on_both_backends!(
    silent_node_is_fenced_and_its_jobs_reclaimed_on,
    silent_node_is_fenced_and_its_jobs_reclaimed
);

/// Proves outcomes are fenced by attempt as well as owner: a node that claimed a job again
/// (after its first claim expired) cannot store the first attempt's outcome or failure, and
/// that a node registered under a name again (a restarted process) expires the leases its
/// predecessor held, while registering the live incarnation again leaves them alone.
async fn outcomes_are_fenced_by_attempt(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    store
        .insert_job(&NewJob::new(
            "sentiment.analyze",
            json!({"texts": ["x"]}),
            5,
        ))
        .await
        .unwrap();
    let first = store.claim_jobs("node-a", now_ms() - 1, 1).await.unwrap();
    let second = store
        .claim_jobs("node-a", now_ms() + 3_600_000, 1)
        .await
        .unwrap();
    assert_eq!((first[0].attempts, second[0].attempts), (1, 2));
    let failure = bulwark_store::JobFailure {
        code: "PROVIDER_UNAVAILABLE".to_owned(),
        message: "stale".to_owned(),
        retry_at_ms: Some(now_ms()),
        final_status: JobStatus::Failed,
        refund_attempt: false,
    };
    assert_eq!(
        store
            .fail_job(LeaseRef::of(&first[0], "node-a"), &failure)
            .await
            .unwrap(),
        None,
        "the first attempt's failure is refused"
    );
    assert_eq!(
        store
            .complete_job(LeaseRef::of(&first[0], "node-a"), &json!({}))
            .await
            .unwrap(),
        None,
        "the first attempt's success is refused"
    );

    store
        .register_node(&registration("node-a", "a-1"))
        .await
        .unwrap();
    let again = store
        .register_node(&registration("node-a", "a-1"))
        .await
        .unwrap();
    assert_eq!(
        again.num_jobs_reclaimed, 0,
        "the live incarnation keeps its leases"
    );
    let restarted = store
        .register_node(&registration("node-a", "a-2"))
        .await
        .unwrap();
    assert_eq!(
        restarted.num_jobs_reclaimed, 1,
        "a restarted process's predecessor's job runs again at once"
    );
    let reclaimed = store
        .claim_jobs("node-b", now_ms() + 3_600_000, 1)
        .await
        .unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].attempts, 3);
}

on_both_backends!(
    outcomes_are_fenced_by_attempt_on,
    outcomes_are_fenced_by_attempt
);
