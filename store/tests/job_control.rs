//! Cancels and paused kinds in the store, run against both SQLite and the real PostgreSQL.

use std::time::Duration;

use bulwark_core::now_ms;

use bulwark_store::on_both_backends;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{
    CancelCount, CancelFilter, CancelOutcome, JobFailure, JobRoute, JobStatus, JobTransport,
    LeaseRef, LocalQueue, LocalQueueParams, NewJob, OutcomeSink, Store,
};
use serde_json::json;

fn job_of(kind: &str) -> NewJob {
    NewJob {
        kind: kind.to_owned(),
        payload: json!({ "texts": ["good"] }),
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

/// Stores `jobs` in the local queue and returns their ids, in order.
async fn insert(store: &Store, jobs: &[NewJob]) -> Vec<String> {
    store
        .insert_job_batch(jobs, JobRoute::Local)
        .await
        .unwrap()
        .iter()
        .map(|outcome| outcome.job().id.clone())
        .collect()
}

/// Proves a cancelled queued job ends `cancelled` and is never claimed; a running job's
/// cancel is a request its node can read and finish as `cancelled`; a finished job is left
/// alone; an unknown id is `None`.
async fn cancel_queued_running_and_finished(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let ids = insert(
        &store,
        &[job_of("sentiment.analyze"), job_of("sentiment.analyze")],
    )
    .await;
    let node = queue(&store);
    let running = node.claim(1).await.unwrap().remove(0);
    let queued_id = ids.iter().find(|id| **id != running.id).unwrap();

    let Some(CancelOutcome::Cancelled(cancelled)) = store.cancel_job(queued_id).await.unwrap()
    else {
        panic!("a queued job is cancelled at once");
    };
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(cancelled.error_code.as_deref(), Some("CANCELLED"));
    assert!(cancelled.finished_at_ms.is_some());
    assert!(node.claim(10).await.unwrap().is_empty(), "never claimed");

    assert!(store.cancel_requested_jobs().await.unwrap().is_empty());
    let Some(CancelOutcome::Requested(requested)) = store.cancel_job(&running.id).await.unwrap()
    else {
        panic!("a running job's cancel is a request");
    };
    assert_eq!(requested.status, JobStatus::Running);
    let requested_at = requested.cancel_requested_at_ms.expect("request time");
    assert_eq!(
        store.cancel_requested_jobs().await.unwrap(),
        [running.id.as_str()]
    );
    let Some(CancelOutcome::Requested(again)) = store.cancel_job(&running.id).await.unwrap() else {
        panic!("asked again, still a request");
    };
    assert_eq!(
        again.cancel_requested_at_ms,
        Some(requested_at),
        "the first time is kept"
    );

    let failure = JobFailure {
        code: "CANCELLED".to_owned(),
        message: "cancelled while running".to_owned(),
        retry_at_ms: None,
        final_status: JobStatus::Cancelled,
        refund_attempt: false,
    };
    let stopped = node
        .fail(&running, &failure)
        .await
        .unwrap()
        .expect("lease held");
    assert_eq!(stopped.status, JobStatus::Cancelled);
    assert!(store.cancel_requested_jobs().await.unwrap().is_empty());
    let Some(CancelOutcome::Finished(finished)) = store.cancel_job(&running.id).await.unwrap()
    else {
        panic!("a finished job is left alone");
    };
    assert_eq!(finished, stopped);
    assert_eq!(store.cancel_job("no-such-job").await.unwrap(), None);
}

on_both_backends!(
    cancel_queued_running_and_finished_on,
    cancel_queued_running_and_finished
);

/// Proves a bulk cancel touches only unfinished jobs matching its filter, counts what it did,
/// and that its dry run counts the same without changing anything.
async fn bulk_cancel_by_filter(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    insert(
        &store,
        &[
            job_of("audit.run"),
            job_of("audit.run"),
            job_of("audit.run"),
        ],
    )
    .await;
    let node = queue(&store);
    // One audit runs; the other kind's job arrives after the claim (inserted before, it could
    // share the audits' millisecond and be claimed first).
    let claimed = node.claim(1).await.unwrap();
    assert_eq!(claimed[0].kind, "audit.run");
    insert(&store, &[job_of("sentiment.analyze")]).await;
    let audits = CancelFilter {
        kind: Some("audit.run".to_owned()),
        status: None,
    };
    let expected = CancelCount {
        num_cancelled: 2,
        num_requested: 1,
    };
    assert_eq!(
        store.count_cancellable_jobs(&audits).await.unwrap(),
        expected
    );
    assert_eq!(
        store.count_cancellable_jobs(&audits).await.unwrap(),
        expected,
        "a dry run changes nothing"
    );
    let queued_only = CancelFilter {
        kind: Some("audit.run".to_owned()),
        status: Some(JobStatus::Queued),
    };
    assert_eq!(
        store.cancel_jobs(&queued_only).await.unwrap(),
        CancelCount {
            num_cancelled: 2,
            num_requested: 0
        }
    );
    assert_eq!(
        store.cancel_jobs(&audits).await.unwrap(),
        CancelCount {
            num_cancelled: 0,
            num_requested: 1
        }
    );
    let counts = store.count_jobs().await.unwrap();
    let count_of = |kind: &str, status: &str| {
        counts
            .iter()
            .find(|count| count.kind == kind && count.status == status)
            .map_or(0, |count| count.count)
    };
    assert_eq!(count_of("audit.run", "cancelled"), 2);
    assert_eq!(count_of("audit.run", "running"), 1);
    assert_eq!(
        count_of("sentiment.analyze", "queued"),
        1,
        "other kinds untouched"
    );
}

on_both_backends!(bulk_cancel_by_filter_on, bulk_cancel_by_filter);

/// Proves a paused kind's local jobs are not claimed (other kinds are) and are claimed again
/// once it is resumed; pausing twice keeps the first pause.
async fn paused_kinds_are_not_claimed(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    insert(&store, &[job_of("audit.run"), job_of("sentiment.analyze")]).await;
    assert!(
        store
            .pause_kind("audit.run", Some("key:ops"))
            .await
            .unwrap()
    );
    assert!(
        !store.pause_kind("audit.run", None).await.unwrap(),
        "already paused"
    );
    let paused = store.paused_kinds().await.unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].paused_by.as_deref(), Some("key:ops"));
    let node = queue(&store);
    let claimed = node.claim(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].kind, "sentiment.analyze");
    assert!(node.claim(10).await.unwrap().is_empty(), "the audit waits");
    assert!(store.resume_kind("audit.run").await.unwrap());
    assert!(
        !store.resume_kind("audit.run").await.unwrap(),
        "not paused any more"
    );
    let resumed = node.claim(10).await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].kind, "audit.run");
}

on_both_backends!(
    paused_kinds_are_not_claimed_on,
    paused_kinds_are_not_claimed
);

/// Proves a broker delivery of a paused kind is parked: its row is stored queued and
/// unpublished, the outbox keeps it while the kind is paused and hands it over once resumed;
/// parking the same message again finds the row.
async fn paused_broker_jobs_wait_in_the_outbox(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    store.pause_kind("sentiment.analyze", None).await.unwrap();
    let delivered = NewJob {
        idempotency_key: Some("message-1".to_owned()),
        ..job_of("sentiment.analyze")
    };
    let parked = store
        .park_delivered_job("message-1", &delivered)
        .await
        .unwrap()
        .expect("parked");
    assert_eq!(parked.status, JobStatus::Queued);
    let again = store
        .park_delivered_job("message-1", &delivered)
        .await
        .unwrap()
        .expect("found and parked again");
    assert_eq!(again.id, parked.id);
    assert!(
        store
            .unpublished_jobs(i64::MAX, 10)
            .await
            .unwrap()
            .is_empty(),
        "the outbox keeps it while paused"
    );
    store.resume_kind("sentiment.analyze").await.unwrap();
    let outbox = store.unpublished_jobs(i64::MAX, 10).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].id, parked.id);

    // Once its job has run, a message of the job is not parked: its delivery publishes the
    // stored outcome.
    let claimed = store
        .claim_job_by_id(&parked.id, "node-a", now_ms() + 60_000)
        .await
        .unwrap()
        .expect("claimed");
    store
        .complete_job(LeaseRef::of(&claimed, "node-a"), &json!({"ok": true}))
        .await
        .unwrap()
        .expect("lease held");
    store.pause_kind("sentiment.analyze", None).await.unwrap();
    assert_eq!(
        store
            .park_delivered_job("message-1", &delivered)
            .await
            .unwrap(),
        None,
        "a finished job is not parked"
    );
}

on_both_backends!(
    paused_broker_jobs_wait_in_the_outbox_on,
    paused_broker_jobs_wait_in_the_outbox
);

/// Proves a submitter's confirm that arrives after the job's delivery was parked (the consumer
/// was faster than the confirm) leaves the job in the outbox, so it is published again once
/// the kind resumes; the republisher's own confirm, which read the parked row, takes it out.
async fn a_late_confirm_does_not_unpark(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let submitted = store
        .insert_routed_job(&job_of("sentiment.analyze"), JobRoute::BrokerPending)
        .await
        .unwrap()
        .job()
        .clone();
    store.pause_kind("sentiment.analyze", None).await.unwrap();
    let parked = store
        .park_delivered_job(&submitted.id, &job_of("sentiment.analyze"))
        .await
        .unwrap()
        .expect("parked");
    assert!(parked.parked_at_ms.is_some());
    store.mark_jobs_published(&[&submitted]).await.unwrap();
    store.resume_kind("sentiment.analyze").await.unwrap();
    let outbox = store.unpublished_jobs(i64::MAX, 10).await.unwrap();
    assert_eq!(outbox.len(), 1, "the late confirm left it parked");
    assert_eq!(outbox[0].id, submitted.id);
    store.mark_jobs_published(&[&outbox[0]]).await.unwrap();
    assert!(
        store
            .unpublished_jobs(i64::MAX, 10)
            .await
            .unwrap()
            .is_empty(),
        "republished, it leaves the outbox"
    );
    let published = store.get_job(&submitted.id).await.unwrap().unwrap();
    assert_eq!(published.parked_at_ms, None);
}

on_both_backends!(
    a_late_confirm_does_not_unpark_on,
    a_late_confirm_does_not_unpark
);
