//! Batch inserts of jobs, run against both SQLite and the real PostgreSQL.

use bulwark_store::on_both_backends;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{
    BatchInsertOutcome, InsertOutcome, Job, JobFilter, JobRoute, JobStatus, NewJob,
};
use serde_json::{Value, json};

fn new_job(key_opt: Option<&str>, payload: Value) -> NewJob {
    NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload,
        idempotency_key: key_opt.map(str::to_owned),
        request_id: Some("req-batch".to_owned()),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
        max_attempts: 4,
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    }
}

fn texts(text: &str) -> Value {
    json!({ "texts": [text] })
}

/// Returns the outcome's name and its job's id.
fn status_of(outcome: &BatchInsertOutcome) -> (&'static str, &str) {
    let status = match outcome {
        BatchInsertOutcome::Created(_) => "created",
        BatchInsertOutcome::Existing(_) => "existing",
        BatchInsertOutcome::Conflict(_) => "conflict",
    };
    (status, outcome.job().id.as_str())
}

/// Proves each job of a batch gets its idempotency outcome: created with every field, existing
/// for a key stored before with the same job, conflict for a key stored before with another
/// payload or kind, and jobs without a key always created, one outcome per job in order.
async fn outcomes_follow_the_idempotency_rules(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let InsertOutcome::Created(stored) = store
        .insert_job(&new_job(Some("taken"), texts("good")))
        .await
        .unwrap()
    else {
        panic!("the first insert creates");
    };
    let mut other_kind = new_job(Some("taken"), texts("good"));
    other_kind.kind = "provider.complete".to_owned();
    let batch = vec![
        new_job(Some("fresh"), texts("one")),
        new_job(Some("taken"), texts("good")),
        new_job(Some("taken"), texts("other payload")),
        other_kind,
        new_job(None, texts("no key")),
        new_job(None, texts("no key")),
    ];
    let outcomes = store
        .insert_job_batch(&batch, JobRoute::Local)
        .await
        .unwrap();
    let statuses: Vec<&str> = outcomes
        .iter()
        .map(|outcome| status_of(outcome).0)
        .collect();
    assert_eq!(
        statuses,
        [
            "created", "existing", "conflict", "conflict", "created", "created"
        ]
    );
    for replay in &outcomes[1..4] {
        assert_eq!(
            replay.job(),
            &stored,
            "a taken key answers with the stored job"
        );
    }
    let created = outcomes[0].job();
    assert_eq!(created.status, JobStatus::Queued);
    assert_eq!(created.attempts, 0);
    assert_eq!(created.max_attempts, 4);
    assert_eq!(created.payload, texts("one"));
    assert_eq!(created.idempotency_key.as_deref(), Some("fresh"));
    assert_eq!(created.request_id.as_deref(), Some("req-batch"));
    assert_eq!(
        created.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(
        store.get_job(&created.id).await.unwrap().as_ref(),
        Some(created)
    );
    assert_ne!(outcomes[4].job().id, outcomes[5].job().id);
    let page = store
        .list_jobs(&JobFilter {
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 4, "three created by the batch, one before");
}
on_both_backends!(
    outcomes_follow_the_idempotency_rules_on,
    outcomes_follow_the_idempotency_rules
);

/// Proves a key used several times in one batch behaves as if the jobs had been submitted in
/// order: the first creates, a later same job is existing (the one just created), a later
/// other job is a conflict; and a key first taken by a conflict still answers a later job
/// that matches the stored one as existing.
async fn repeated_keys_in_a_batch_behave_as_in_order(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    store
        .insert_job(&new_job(Some("old"), texts("stored")))
        .await
        .unwrap();
    let batch = vec![
        new_job(Some("k"), texts("first")),
        new_job(Some("k"), texts("second")),
        new_job(Some("k"), texts("first")),
        new_job(Some("old"), texts("different")),
        new_job(Some("old"), texts("stored")),
    ];
    let outcomes = store
        .insert_job_batch(&batch, JobRoute::Local)
        .await
        .unwrap();
    let statuses: Vec<(&str, &str)> = outcomes.iter().map(status_of).collect();
    let first_id = statuses[0].1;
    assert_eq!(statuses[0].0, "created");
    assert_eq!(statuses[1], ("conflict", first_id));
    assert_eq!(statuses[2], ("existing", first_id));
    assert_eq!(statuses[3].0, "conflict");
    assert_eq!(statuses[4], ("existing", statuses[3].1));
    assert_eq!(outcomes[4].job().payload, texts("stored"));
}
on_both_backends!(
    repeated_keys_in_a_batch_behave_as_in_order_on,
    repeated_keys_in_a_batch_behave_as_in_order
);

/// Proves the route is kept: a local batch is claimable and out of the outbox, a broker batch
/// waits in the outbox (never claimed locally) until marked published, in one call.
async fn routes_are_kept_and_published_rows_leave_the_outbox(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let local: Vec<NewJob> = (0..3)
        .map(|index| new_job(Some(&format!("local-{index}")), texts("local")))
        .collect();
    let broker: Vec<NewJob> = (0..3)
        .map(|index| new_job(Some(&format!("broker-{index}")), texts("broker")))
        .collect();
    store
        .insert_job_batch(&local, JobRoute::Local)
        .await
        .unwrap();
    let broker_ids: Vec<String> = store
        .insert_job_batch(&broker, JobRoute::BrokerPending)
        .await
        .unwrap()
        .iter()
        .map(|outcome| outcome.job().id.clone())
        .collect();
    let outbox = store.unpublished_jobs(i64::MAX, 100).await.unwrap();
    let mut outbox_ids: Vec<String> = outbox.iter().map(|job| job.id.clone()).collect();
    outbox_ids.sort();
    let mut expected = broker_ids.clone();
    expected.sort();
    assert_eq!(
        outbox_ids, expected,
        "only the broker batch is in the outbox"
    );
    let claimed = store.claim_jobs("node-a", i64::MAX, 100).await.unwrap();
    assert_eq!(claimed.len(), 3, "only the local batch is claimable");
    assert!(claimed.iter().all(|job| job.payload == texts("local")));

    let mut asked = broker_ids.clone();
    asked.push(claimed[0].id.clone());
    let mut pending = store.unpublished_job_ids(&asked).await.unwrap();
    pending.sort();
    assert_eq!(pending, expected, "local jobs are never unpublished");

    let published: Vec<Job> = store
        .unpublished_jobs(i64::MAX, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|job| broker_ids[..2].contains(&job.id))
        .collect();
    store
        .mark_jobs_published(&published.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    let outbox = store.unpublished_jobs(i64::MAX, 100).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].id, broker_ids[2]);
}
on_both_backends!(
    routes_are_kept_and_published_rows_leave_the_outbox_on,
    routes_are_kept_and_published_rows_leave_the_outbox
);

/// Proves a full batch of 1,000 jobs is stored with one outcome per job, in order, and that
/// submitting it again answers every job as existing with the same ids.
async fn a_full_batch_is_stored_and_replayed(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let batch: Vec<NewJob> = (0..1000)
        .map(|index| new_job(Some(&format!("bulk-{index:04}")), texts(&index.to_string())))
        .collect();
    let first = store
        .insert_job_batch(&batch, JobRoute::Local)
        .await
        .unwrap();
    assert_eq!(first.len(), 1000);
    for (index, outcome) in first.iter().enumerate() {
        assert!(outcome.is_created(), "job {index}: {outcome:?}");
        assert_eq!(outcome.job().payload, texts(&index.to_string()));
    }
    let again = store
        .insert_job_batch(&batch, JobRoute::Local)
        .await
        .unwrap();
    for (before, after) in first.iter().zip(&again) {
        assert_eq!(status_of(after), ("existing", before.job().id.as_str()));
    }
    assert!(
        store
            .insert_job_batch(&[], JobRoute::Local)
            .await
            .unwrap()
            .is_empty()
    );
}
on_both_backends!(
    a_full_batch_is_stored_and_replayed_on,
    a_full_batch_is_stored_and_replayed
);

/// Proves two batches racing with the same keys in opposite orders neither deadlock nor
/// double-create: every key ends with one job, created by exactly one of them.
async fn concurrent_batches_with_shared_keys_create_each_job_once(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let forward: Vec<NewJob> = (0..200)
        .map(|index| new_job(Some(&format!("shared-{index:03}")), texts("same")))
        .collect();
    let backward: Vec<NewJob> = forward.iter().rev().cloned().collect();
    let (left, right) = tokio::join!(
        store.insert_job_batch(&forward, JobRoute::Local),
        store.insert_job_batch(&backward, JobRoute::Local)
    );
    let (left, right) = (left.unwrap(), right.unwrap());
    for (index, left_outcome) in left.iter().enumerate() {
        let right_outcome = &right[forward.len() - 1 - index];
        assert_eq!(left_outcome.job().id, right_outcome.job().id);
        assert_ne!(
            left_outcome.is_created(),
            right_outcome.is_created(),
            "exactly one batch creates key {index}"
        );
    }
}
on_both_backends!(
    concurrent_batches_with_shared_keys_create_each_job_once_on,
    concurrent_batches_with_shared_keys_create_each_job_once
);
