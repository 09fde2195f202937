//! The job pruner against real databases while jobs are being created and finished.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_actors::{JobPrunerActor, JobPrunerHandle, JobPrunerParams, RetentionPolicy};
use bulwark_core::Liveness;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{
    DEFAULT_PRIORITY, JobFilter, JobRoute, JobStatus, JobTransport, LocalQueue, LocalQueueParams,
    NewJob, OutcomeSink, Store,
};
use bulwark_test_support::eventually;
use ractor::Actor;
use serde_json::json;
use uuid::Uuid;

/// How long a succeeded job is kept in these tests.
const KEEP_SUCCEEDED: Duration = Duration::from_millis(300);

fn new_job() -> NewJob {
    NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload: json!({"texts": ["fine"]}),
        idempotency_key: None,
        request_id: None,
        trace_id: None,
        max_attempts: 3,
        priority: DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    }
}

/// Returns every job in the table, by id, with its status.
async fn all_jobs(store: &Store) -> Vec<(String, JobStatus)> {
    let mut jobs = Vec::new();
    let mut filter = JobFilter {
        limit: 500,
        ..JobFilter::default()
    };
    loop {
        let page = store.list_jobs(&filter).await.unwrap();
        jobs.extend(page.jobs.into_iter().map(|job| (job.id, job.status)));
        match page.next_cursor {
            Some(cursor) => filter.before_id = Some(cursor),
            None => return jobs,
        }
    }
}

/// What the load did.
struct Churned {
    /// Jobs it left queued or running.
    unfinished: HashSet<String>,
    /// Jobs it finished, with when they finished.
    succeeded: Vec<(String, i64)>,
}

/// Creates and finishes jobs until `stop` is set: each round inserts ten, claims and
/// succeeds some of them, so the table always holds queued, running and succeeded jobs.
async fn churn(store: Store, stop: Arc<AtomicBool>, finished: Arc<Mutex<Vec<String>>>) -> Churned {
    let node = LocalQueue::new(
        store.clone(),
        LocalQueueParams {
            owner: "load".to_owned(),
            lease: Duration::from_secs(60),
            gates: Vec::new(),
        },
    );
    let mut unfinished = HashSet::new();
    let mut succeeded = Vec::new();
    let mut round = 0_u32;
    while !stop.load(Ordering::Acquire) {
        let jobs: Vec<NewJob> = (0..10).map(|_| new_job()).collect();
        for outcome in store
            .insert_job_batch(&jobs, JobRoute::Local)
            .await
            .unwrap()
        {
            unfinished.insert(outcome.job().id.clone());
        }
        let claimed = node.claim(8).await.unwrap();
        // Every third round leaves its claims running; the others finish them.
        round += 1;
        if !round.is_multiple_of(3) {
            for job in &claimed {
                let stored = node.complete(job, &json!({"ok": true})).await.unwrap();
                let finished_at_ms = stored.and_then(|job| job.finished_at_ms).unwrap();
                unfinished.remove(&job.id);
                succeeded.push((job.id.clone(), finished_at_ms));
                finished.lock().unwrap().push(job.id.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Churned {
        unfinished,
        succeeded,
    }
}

/// Proves the pruner, running every 50 ms while jobs are created and finished, deletes
/// succeeded jobs once they are past their retention, never a younger one, and never a
/// queued or running one: every job the load left unfinished is still there, every job that
/// succeeded within the retention too, and once they age the succeeded ones all go.
async fn pruner_removes_only_what_its_policy_says_under_load(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let name = format!("job-pruner-{}", Uuid::now_v7());
    let params = JobPrunerParams {
        store: store.clone(),
        policy: RetentionPolicy {
            succeeded: Some(KEEP_SUCCEEDED),
            failed: None,
            dead: None,
            cancelled: None,
            batch_size: 7,
            max_batches_per_pass: 3,
        },
        interval: Duration::from_millis(50),
        liveness: Liveness::default(),
    };
    let (pruner, pruner_task) = Actor::spawn(Some(name.clone()), JobPrunerActor, params)
        .await
        .expect("pruner starts");
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(Mutex::new(Vec::new()));
    let load = tokio::spawn(churn(store.clone(), stop.clone(), finished.clone()));
    // The load runs until the pruner has deleted a job it finished: passes ran under load.
    eventually(Duration::from_secs(20), || async {
        let present: HashSet<String> = all_jobs(&store)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let finished = finished.lock().unwrap().clone();
        finished
            .iter()
            .any(|id| !present.contains(id))
            .then_some(())
    })
    .await;
    stop.store(true, Ordering::Release);
    let churned = load.await.expect("load ran");
    let snapshot_at_ms = bulwark_core::now_ms();
    let present: HashSet<String> = all_jobs(&store)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let missing: Vec<&String> = churned.unfinished.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "queued or running jobs were pruned: {missing:?}"
    );
    // A job that finished less than its retention before the snapshot began is still there
    // (the margin covers the pass that read the clock just before the snapshot).
    let young_cutoff_ms = snapshot_at_ms - KEEP_SUCCEEDED.as_millis() as i64 + 100;
    let young_missing: Vec<&String> = churned
        .succeeded
        .iter()
        .filter(|(id, finished_at_ms)| *finished_at_ms > young_cutoff_ms && !present.contains(id))
        .map(|(id, _)| id)
        .collect();
    assert!(
        young_missing.is_empty(),
        "succeeded jobs younger than their retention were pruned: {young_missing:?}"
    );
    let num_old = churned
        .succeeded
        .iter()
        .filter(|(id, _)| !present.contains(id))
        .count();
    assert!(
        num_old > 0,
        "the pruner deleted old succeeded jobs under load"
    );
    let handle = JobPrunerHandle::new(name);
    eventually(Duration::from_secs(10), || async {
        handle
            .run_pass(Duration::from_secs(5))
            .await
            .expect("pruner answers")
            .expect("pass succeeds");
        let left = all_jobs(&store).await;
        let num_succeeded = left
            .iter()
            .filter(|(_, status)| *status == JobStatus::Succeeded)
            .count();
        (num_succeeded == 0).then_some(())
    })
    .await;
    let left = all_jobs(&store).await;
    assert_eq!(
        left.len(),
        churned.unfinished.len(),
        "only the unfinished jobs are left"
    );
    pruner.stop(None);
    pruner_task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruner_removes_only_what_its_policy_says_under_load_on_sqlite() {
    pruner_removes_only_what_its_policy_says_under_load(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruner_removes_only_what_its_policy_says_under_load_on_postgres() {
    pruner_removes_only_what_its_policy_says_under_load(TestBackend::Postgres).await;
}
