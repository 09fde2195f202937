//! Workflows in the store, run against both SQLite and the real PostgreSQL: a graph stored in
//! one transaction, waits released when parents succeed, cancelled when one does not, the
//! graph view.

use std::time::Duration;

use bulwark_store::on_both_backends;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{
    JobGraph, JobRoute, JobStatus, JobTransport, LocalQueue, LocalQueueParams, NewJob, OutcomeSink,
    ParentFailurePolicy, ParentRef, Store, WAITING_RUN_AT_MS,
};
use serde_json::json;

fn job_of(index: usize) -> NewJob {
    NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload: json!({ "texts": [format!("text {index}")] }),
        idempotency_key: None,
        request_id: None,
        trace_id: None,
        max_attempts: 3,
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    }
}

fn graph_of(parents: Vec<Vec<ParentRef>>, policy: ParentFailurePolicy) -> JobGraph {
    JobGraph {
        jobs: (0..parents.len()).map(job_of).collect(),
        parents,
        on_parent_failure: policy,
    }
}

fn queue(store: &Store) -> LocalQueue {
    LocalQueue::new(
        store.clone(),
        LocalQueueParams {
            owner: "node-a".to_owned(),
            lease: Duration::from_secs(60),
            gates: Vec::new(),
        },
    )
}

/// Claims every runnable job and completes it; returns their ids, sorted.
async fn run_all(node: &LocalQueue) -> Vec<String> {
    let claimed = node.claim(100).await.unwrap();
    for job in &claimed {
        node.complete(job, &json!({"ok": true})).await.unwrap();
    }
    let mut ids: Vec<String> = claimed.into_iter().map(|job| job.id).collect();
    ids.sort();
    ids
}

/// Proves a fan-out/fan-in graph (1 -> 3 -> 1) runs level by level: only the root is
/// claimable at first, each pass of the resolver releases the jobs whose parents all
/// succeeded, the last job's parents are readable, and the graph view shows every job and
/// edge from any of its jobs.
async fn a_graph_runs_level_by_level(backend: TestBackend) {
    use ParentRef::Node;
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let graph = graph_of(
        vec![
            vec![],
            vec![Node(0)],
            vec![Node(0)],
            vec![Node(0)],
            vec![Node(1), Node(2), Node(3)],
        ],
        ParentFailurePolicy::Cancel,
    );
    let outcomes = store
        .insert_job_graph(&graph, JobRoute::Local)
        .await
        .unwrap();
    let ids: Vec<String> = outcomes
        .iter()
        .map(|outcome| outcome.job().id.clone())
        .collect();
    assert_eq!(outcomes[4].job().run_at_ms, WAITING_RUN_AT_MS, "it waits");
    let node = queue(&store);
    assert_eq!(
        run_all(&node).await,
        vec![ids[0].clone()],
        "only the root runs"
    );
    assert!(run_all(&node).await.is_empty(), "the rest wait");

    let resolved = store.resolve_waiting_jobs().await.unwrap();
    let mut released = resolved.released.clone();
    released.sort();
    let mut middle = ids[1..4].to_vec();
    middle.sort();
    assert_eq!(released, middle);
    assert!(resolved.cancelled.is_empty());
    assert_eq!(run_all(&node).await, middle);
    let resolved = store.resolve_waiting_jobs().await.unwrap();
    assert_eq!(resolved.released, vec![ids[4].clone()]);
    assert_eq!(run_all(&node).await, vec![ids[4].clone()]);
    assert_eq!(
        store.resolve_waiting_jobs().await.unwrap(),
        Default::default(),
        "nothing waits any more"
    );

    let parents = store.parent_jobs(&ids[4]).await.unwrap();
    assert_eq!(parents.len(), 3);
    assert!(
        parents
            .iter()
            .all(|job| job.result == Some(json!({"ok": true})))
    );
    let view = store.job_graph(&ids[2], 100).await.unwrap().expect("graph");
    assert_eq!(view.jobs.len(), 5);
    assert_eq!(view.edges.len(), 6);
    assert!(!view.truncated);
    assert!(view.edges.contains(&(ids[0].clone(), ids[2].clone())));
    assert!(view.edges.contains(&(ids[3].clone(), ids[4].clone())));
    let small = store.job_graph(&ids[0], 2).await.unwrap().expect("graph");
    assert_eq!(small.jobs.len(), 2);
    assert!(small.truncated);
    assert!(store.job_graph("nope", 10).await.unwrap().is_none());
}

on_both_backends!(a_graph_runs_level_by_level_on, a_graph_runs_level_by_level);

/// Proves a parent that does not succeed cancels its dependants, one level per pass, while a
/// dependant with the `run` policy runs anyway once its parents finished.
async fn a_failed_parent_cancels_its_dependants(backend: TestBackend) {
    use ParentRef::Node;
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let chain = graph_of(
        vec![vec![], vec![Node(0)], vec![Node(1)]],
        ParentFailurePolicy::Cancel,
    );
    let ids: Vec<String> = store
        .insert_job_graph(&chain, JobRoute::Local)
        .await
        .unwrap()
        .iter()
        .map(|outcome| outcome.job().id.clone())
        .collect();
    store.cancel_job(&ids[0]).await.unwrap().expect("cancelled");
    assert_eq!(
        store.resolve_waiting_jobs().await.unwrap().cancelled,
        vec![ids[1].clone()]
    );
    assert_eq!(
        store.resolve_waiting_jobs().await.unwrap().cancelled,
        vec![ids[2].clone()]
    );
    let last = store.get_job(&ids[2]).await.unwrap().expect("stored");
    assert_eq!(last.status, JobStatus::Cancelled);
    assert_eq!(last.error_code.as_deref(), Some("CANCELLED"));
    assert!(
        last.error_message
            .as_deref()
            .is_some_and(|message| message.contains("did not succeed")),
        "{last:?}"
    );

    let anyway = graph_of(vec![vec![], vec![Node(0)]], ParentFailurePolicy::Run);
    let ids: Vec<String> = store
        .insert_job_graph(&anyway, JobRoute::Local)
        .await
        .unwrap()
        .iter()
        .map(|outcome| outcome.job().id.clone())
        .collect();
    store.cancel_job(&ids[0]).await.unwrap().expect("cancelled");
    assert_eq!(
        store.resolve_waiting_jobs().await.unwrap().released,
        vec![ids[1].clone()]
    );
}

on_both_backends!(
    a_failed_parent_cancels_its_dependants_on,
    a_failed_parent_cancels_its_dependants
);

/// Proves a broker job that waits stays out of the outbox until it is released, and a job
/// may depend on a job stored before it.
async fn a_waiting_broker_job_stays_out_of_the_outbox(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let parent = store
        .insert_routed_job(&job_of(0), JobRoute::Local)
        .await
        .unwrap();
    let parent_id = parent.job().id.clone();
    let child = graph_of(
        vec![vec![ParentRef::Job(parent_id.clone())]],
        ParentFailurePolicy::Cancel,
    );
    let child_id = store
        .insert_job_graph(&child, JobRoute::BrokerPending)
        .await
        .unwrap()[0]
        .job()
        .id
        .clone();
    let far_future = i64::MAX;
    let outbox = store.unpublished_jobs(far_future, 100).await.unwrap();
    assert!(outbox.iter().all(|job| job.id != child_id), "it waits");
    assert_eq!(run_all(&queue(&store)).await, vec![parent_id]);
    store.resolve_waiting_jobs().await.unwrap();
    let outbox = store.unpublished_jobs(far_future, 100).await.unwrap();
    assert!(outbox.iter().any(|job| job.id == child_id), "released");
}

on_both_backends!(
    a_waiting_broker_job_stays_out_of_the_outbox_on,
    a_waiting_broker_job_stays_out_of_the_outbox
);
