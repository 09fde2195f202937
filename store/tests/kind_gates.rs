//! The gates of limited kinds in the store, run against both SQLite and the real PostgreSQL:
//! running limits across claimers (nodes), per node, the start rate, the broker's claim by id.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bulwark_core::{KindGate, KindLimits};
use bulwark_store::on_both_backends;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{
    GatedClaim, JobRoute, JobStatus, JobTransport, LeaseRef, LocalQueue, LocalQueueParams, NewJob,
    OutcomeSink, Store,
};
use serde_json::json;

const LIMITED: &str = "audit.run";
const FREE: &str = "sentiment.analyze";

fn job_of(kind: &str) -> NewJob {
    NewJob {
        kind: kind.to_owned(),
        payload: json!({ "n": 1 }),
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

fn gate(limits: KindLimits) -> KindGate {
    KindGate {
        kind: LIMITED.to_owned(),
        limits,
    }
}

/// A node's local queue whose only limited kind is [`LIMITED`].
fn node(store: &Store, owner: &str, limits: KindLimits) -> LocalQueue {
    LocalQueue::new(
        store.clone(),
        LocalQueueParams {
            owner: owner.to_owned(),
            lease: Duration::from_secs(60),
            gates: vec![gate(limits)],
        },
    )
}

async fn insert(store: &Store, kind: &str, count: usize, route: JobRoute) -> Vec<String> {
    let jobs: Vec<NewJob> = (0..count).map(|_| job_of(kind)).collect();
    store
        .insert_job_batch(&jobs, route)
        .await
        .unwrap()
        .iter()
        .map(|outcome| outcome.job().id.clone())
        .collect()
}

async fn num_running(store: &Store, kind: &str) -> i64 {
    store
        .count_live_jobs(bulwark_core::now_ms())
        .await
        .unwrap()
        .iter()
        .filter(|count| count.kind == kind && count.status == "running")
        .map(|count| count.count)
        .sum()
}

/// Proves a cluster-wide limit of 2 holds across four claimers on two nodes claiming 30 jobs
/// at once: every claimer counts the kind's running jobs after each claim and never sees more
/// than 2, a claim with room for 4 gets exactly 2 while none run, and every job runs once.
/// Jobs of other kinds are claimed beside them, unlimited.
async fn a_cluster_limit_holds_across_claimers(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let limits = KindLimits {
        max_running: Some(2),
        ..KindLimits::default()
    };
    insert(&store, LIMITED, 30, JobRoute::Local).await;
    insert(&store, FREE, 8, JobRoute::Local).await;

    let first = node(&store, "node-a", limits);
    let opening = first.claim(12).await.unwrap();
    let num_limited = opening.iter().filter(|job| job.kind == LIMITED).count();
    assert_eq!(num_limited, 2, "the gate lets 2 through");
    assert_eq!(
        opening.len(),
        10,
        "and the rest of the room goes to other kinds"
    );
    for job in &opening {
        first.complete(job, &json!({})).await.unwrap();
    }

    let max_seen = Arc::new(AtomicI64::new(0));
    let mut claimers = Vec::new();
    for index in 0..4 {
        let queue = node(&store, ["node-a", "node-b"][index % 2], limits);
        let store = store.clone();
        let max_seen = max_seen.clone();
        claimers.push(tokio::spawn(async move {
            let mut num_ran = 0;
            loop {
                let claimed = queue.claim(4).await.unwrap();
                let running = num_running(&store, LIMITED).await;
                max_seen.fetch_max(running, Ordering::SeqCst);
                for job in &claimed {
                    queue.complete(job, &json!({})).await.unwrap();
                }
                num_ran += claimed.len();
                let left: i64 = store
                    .count_live_jobs(bulwark_core::now_ms())
                    .await
                    .unwrap()
                    .iter()
                    .filter(|count| count.kind == LIMITED)
                    .map(|count| count.count)
                    .sum();
                if claimed.is_empty() && left == 0 {
                    return num_ran;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut num_ran = 0;
    for claimer in claimers {
        num_ran += tokio::time::timeout(Duration::from_secs(60), claimer)
            .await
            .expect("claimers finish")
            .unwrap();
    }
    assert_eq!(num_ran, 28, "every job ran once");
    let seen = max_seen.load(Ordering::SeqCst);
    assert!(seen <= 2, "{seen} running at once, the limit is 2");
}

on_both_backends!(
    a_cluster_limit_holds_across_claimers_on,
    a_cluster_limit_holds_across_claimers,
    multi_thread
);

/// Proves a per-node limit caps each node on its own: with one running on each node of two,
/// neither claims another, and a node claims again once its own job finished.
async fn a_node_limit_holds_per_node(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let limits = KindLimits {
        max_running_per_node: Some(1),
        ..KindLimits::default()
    };
    insert(&store, LIMITED, 5, JobRoute::Local).await;
    let first = node(&store, "node-a", limits);
    let second = node(&store, "node-b", limits);
    let running = first.claim(5).await.unwrap();
    assert_eq!(running.len(), 1);
    assert!(first.claim(5).await.unwrap().is_empty(), "node-a is full");
    assert_eq!(second.claim(5).await.unwrap().len(), 1, "node-b is not");
    assert!(second.claim(5).await.unwrap().is_empty());
    first.complete(&running[0], &json!({})).await.unwrap();
    assert_eq!(first.claim(5).await.unwrap().len(), 1);
}

on_both_backends!(a_node_limit_holds_per_node_on, a_node_limit_holds_per_node);

/// Proves a start rate of one every 2 s lets one job start, then none until its bucket
/// refilled, whoever claims; and a paused limited kind is not claimed through its gate.
async fn a_start_rate_spaces_starts(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let limits = KindLimits {
        max_starts_per_second: Some(0.5),
        ..KindLimits::default()
    };
    insert(&store, LIMITED, 3, JobRoute::Local).await;
    let first = node(&store, "node-a", limits);
    let second = node(&store, "node-b", limits);
    assert_eq!(first.claim(5).await.unwrap().len(), 1, "a burst of one");
    assert!(
        second.claim(5).await.unwrap().is_empty(),
        "the bucket is empty"
    );
    let started = tokio::time::Instant::now();
    let claimed = bulwark_test_support::eventually(Duration::from_secs(5), || async {
        let claimed = second.claim(5).await.unwrap();
        (!claimed.is_empty()).then_some(claimed)
    })
    .await;
    assert_eq!(claimed.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "the next start waited for its token ({:?})",
        started.elapsed()
    );
    store.pause_kind(LIMITED, Some("tests")).await.unwrap();
    database.execute("UPDATE kind_gates SET tokens = 1").await;
    assert!(first.claim(5).await.unwrap().is_empty(), "paused");
}

on_both_backends!(a_start_rate_spaces_starts_on, a_start_rate_spaces_starts);

/// Proves a broker delivery's claim by id goes through the gate: the first of a kind limited
/// to one running is claimed, the second finds the gate full until the first finished, and a
/// finished job is not claimable (its outcome is published instead).
async fn a_delivery_claims_through_the_gate(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let gate = gate(KindLimits {
        max_running: Some(1),
        ..KindLimits::default()
    });
    let ids = insert(&store, LIMITED, 2, JobRoute::BrokerPublished).await;
    let lease_until = bulwark_core::now_ms() + 60_000;
    let GatedClaim::Claimed(first) = store
        .claim_gated_job(&ids[0], "node-a", lease_until, &gate)
        .await
        .unwrap()
    else {
        panic!("the first is claimed");
    };
    assert_eq!(first.status, JobStatus::Running);
    assert_eq!(first.attempts, 1);
    let waiting = store
        .claim_gated_job(&ids[1], "node-b", lease_until, &gate)
        .await
        .unwrap();
    assert_eq!(waiting, GatedClaim::Full);
    store
        .complete_job(LeaseRef::of(&first, "node-a"), &json!({}))
        .await
        .unwrap()
        .expect("completed");
    let second = store
        .claim_gated_job(&ids[1], "node-b", lease_until, &gate)
        .await
        .unwrap();
    assert!(matches!(second, GatedClaim::Claimed(_)), "{second:?}");
    let finished = store
        .claim_gated_job(&ids[0], "node-b", lease_until, &gate)
        .await
        .unwrap();
    let GatedClaim::NotClaimable(finished) = finished else {
        panic!("a finished job is not claimable: {finished:?}");
    };
    assert_eq!(finished.status, JobStatus::Succeeded);
}

on_both_backends!(
    a_delivery_claims_through_the_gate_on,
    a_delivery_claims_through_the_gate
);
