//! Store and local-queue behaviour, run against both SQLite and the real PostgreSQL.

use std::time::Duration;

use bulwark_core::now_ms;
use bulwark_store::on_both_backends;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{
    ClaimedInsert, DeliveredKey, DeliveredRow, InsertOutcome, Job, JobCompletion, JobFailure,
    JobFilter, JobRoute, JobStatus, JobTransport, LeaseRef, LocalQueue, LocalQueueParams,
    NewDeadLetter, NewJob, OutcomeSink, Store,
};
use bulwark_test_support::eventually;
use serde_json::json;

fn new_job(key_opt: Option<&str>) -> NewJob {
    NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload: json!({ "texts": ["good"] }),
        idempotency_key: key_opt.map(str::to_owned),
        request_id: Some("req-1".to_owned()),
        trace_id: None,
        max_attempts: 3,
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    }
}

/// Looks up one delivered message's row.
async fn find_delivered(store: &Store, id: &str, key: &str) -> Option<Job> {
    let lookup = DeliveredKey {
        id: id.to_owned(),
        key: key.to_owned(),
    };
    store
        .find_delivered_jobs(&[lookup])
        .await
        .unwrap()
        .pop()
        .flatten()
}

/// Creates one delivered message's row already claimed by `owner`, or returns the row that
/// exists for its id or key.
async fn create_delivered(
    store: &Store,
    job: &NewJob,
    owner: &str,
    lease_until_ms: i64,
) -> DeliveredRow {
    let insert = ClaimedInsert {
        message_id: format!("message-{}", job.idempotency_key.as_deref().unwrap_or("")),
        new_job: job.clone(),
        owner: owner.to_owned(),
        lease_until_ms,
    };
    store
        .create_delivered_jobs(&[insert])
        .await
        .unwrap()
        .pop()
        .flatten()
        .expect("every delivered row is answered")
}

/// Returns the job of a row this test expected to be created.
fn created(row: DeliveredRow) -> Job {
    match row {
        DeliveredRow::Created(job) => job,
        DeliveredRow::Existing(job) => panic!("job {} existed", job.id),
    }
}

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

/// Proves a job is stored with every field, and that an idempotency key never yields a second job.
async fn insert_is_idempotent(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let InsertOutcome::Created(created) = store.insert_job(&new_job(Some("key-1"))).await.unwrap()
    else {
        panic!("first insert must create");
    };
    assert_eq!(created.status, JobStatus::Queued);
    assert_eq!(created.attempts, 0);
    assert_eq!(created.request_id.as_deref(), Some("req-1"));
    assert_eq!(created.payload, json!({ "texts": ["good"] }));
    let InsertOutcome::Existing(again) = store.insert_job(&new_job(Some("key-1"))).await.unwrap()
    else {
        panic!("second insert with the same key must return the existing job");
    };
    assert_eq!(again.id, created.id);
    // Jobs without a key are always distinct.
    let first = store.insert_job(&new_job(None)).await.unwrap();
    let second = store.insert_job(&new_job(None)).await.unwrap();
    assert_ne!(first.job().id, second.job().id);
    let page = store
        .list_jobs(&JobFilter {
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 3);
}
on_both_backends!(insert_is_idempotent_on, insert_is_idempotent);

/// Proves claim, complete and fail move jobs through their statuses and respect lease owners.
async fn claim_complete_fail(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let node_a = queue(&store, "node-a", Duration::from_secs(30));
    let node_b = queue(&store, "node-b", Duration::from_secs(30));
    for _ in 0..3 {
        store.insert_job(&new_job(None)).await.unwrap();
    }
    let claimed = node_a.claim(2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(
        claimed
            .iter()
            .all(|job| job.status == JobStatus::Running && job.attempts == 1)
    );
    assert!(
        claimed
            .iter()
            .all(|job| job.lease_owner.as_deref() == Some("node-a"))
    );
    // Node B sees only the one job left; leased jobs are not claimable.
    let rest = node_b.claim(10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert!(node_b.claim(10).await.unwrap().is_empty());

    // A node that does not hold the lease cannot record an outcome.
    assert!(
        node_b
            .complete(&claimed[0], &json!({"ok": true}))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        node_a
            .complete(&claimed[0], &json!({"ok": true}))
            .await
            .unwrap()
            .is_some()
    );
    let done = store.get_job(&claimed[0].id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert!(done.lease_owner.is_none() && done.finished_at_ms.is_some());

    let retry = JobFailure {
        code: "OVERLOADED".to_owned(),
        message: "busy".to_owned(),
        retry_at_ms: Some(now_ms() + 60_000),
        final_status: JobStatus::Dead,
        refund_attempt: false,
    };
    assert!(node_a.fail(&claimed[1], &retry).await.unwrap().is_some());
    let retried = store.get_job(&claimed[1].id).await.unwrap().unwrap();
    assert_eq!(retried.status, JobStatus::Queued);
    assert_eq!(retried.error_code.as_deref(), Some("OVERLOADED"));
    assert_eq!(retried.attempts, 1, "a counted retry keeps its attempt");
    // Not runnable before its retry time.
    assert!(node_a.claim(10).await.unwrap().is_empty());

    // A job the node had no capacity for gets its attempt back.
    let spare = store
        .insert_job(&new_job(None))
        .await
        .unwrap()
        .job()
        .id
        .clone();
    let claimed_spare = node_a.claim(1).await.unwrap();
    assert_eq!(claimed_spare[0].id, spare);
    let no_capacity = JobFailure {
        refund_attempt: true,
        ..retry.clone()
    };
    assert!(
        node_a
            .fail(&claimed_spare[0], &no_capacity)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.get_job(&spare).await.unwrap().unwrap().attempts, 0);

    let permanent = JobFailure {
        code: "VALIDATION_FAILED".to_owned(),
        message: "bad".to_owned(),
        retry_at_ms: None,
        final_status: JobStatus::Failed,
        refund_attempt: false,
    };
    assert!(node_b.fail(&rest[0], &permanent).await.unwrap().is_some());
    let failed = store.get_job(&rest[0].id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error_message.as_deref(), Some("bad"));
}
on_both_backends!(claim_complete_fail_on, claim_complete_fail);

/// Proves a job whose worker died (lease expired) is claimed again, and that release returns
/// jobs without counting the interrupted attempt.
async fn expired_leases_and_release(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let short = queue(&store, "dying-node", Duration::from_millis(50));
    let survivor = queue(&store, "survivor", Duration::from_secs(30));
    let job = store
        .insert_job(&new_job(None))
        .await
        .unwrap()
        .job()
        .clone();
    assert_eq!(short.claim(1).await.unwrap().len(), 1);
    // The dying node's lease expires and the survivor claims the job again.
    let reclaimed = eventually(Duration::from_secs(5), || async {
        survivor.claim(1).await.unwrap().into_iter().next()
    })
    .await;
    assert_eq!(reclaimed.id, job.id);
    assert_eq!(reclaimed.attempts, 2);
    assert_eq!(reclaimed.lease_owner.as_deref(), Some("survivor"));
    // The dead node's late outcome is refused.
    assert!(
        short
            .complete(&reclaimed, &json!({}))
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(
        survivor.renew(std::slice::from_ref(&job.id)).await.unwrap(),
        1
    );
    assert_eq!(
        survivor
            .release(std::slice::from_ref(&job.id))
            .await
            .unwrap(),
        1
    );
    let released = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(released.status, JobStatus::Queued);
    assert_eq!(released.attempts, 1);
    assert!(released.lease_owner.is_none());
}
on_both_backends!(expired_leases_and_release_on, expired_leases_and_release);

/// Proves concurrent claimers never receive the same job (on PostgreSQL via SKIP LOCKED, on
/// SQLite via its single writer).
async fn concurrent_claims_are_disjoint(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let num_jobs = 200;
    for _ in 0..num_jobs {
        store.insert_job(&new_job(None)).await.unwrap();
    }
    let mut claimers = Vec::new();
    for index in 0..4 {
        let node = queue(&store, &format!("node-{index}"), Duration::from_secs(30));
        claimers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let claimed = node.claim(7).await.unwrap();
                if claimed.is_empty() {
                    return ids;
                }
                ids.extend(claimed.into_iter().map(|job| job.id));
            }
        }));
    }
    let mut all_ids = Vec::new();
    for claimer in claimers {
        all_ids.extend(claimer.await.unwrap());
    }
    let total = all_ids.len();
    all_ids.sort();
    all_ids.dedup();
    assert_eq!(total, num_jobs, "every job claimed");
    assert_eq!(all_ids.len(), num_jobs, "no job claimed twice");
}
on_both_backends!(
    concurrent_claims_are_disjoint_on,
    concurrent_claims_are_disjoint
);

/// Proves cursor pagination visits every job once, newest first, and filters apply.
async fn pagination_and_filters(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(
            store
                .insert_job(&new_job(None))
                .await
                .unwrap()
                .job()
                .id
                .clone(),
        );
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut filter = JobFilter {
        limit: 3,
        ..JobFilter::default()
    };
    loop {
        let page = store.list_jobs(&filter).await.unwrap();
        seen.extend(page.jobs.iter().map(|job| job.id.clone()));
        let Some(cursor) = page.next_cursor else {
            break;
        };
        filter.before_id = Some(cursor);
    }
    assert_eq!(seen, ids);
    let node = queue(&store, "node", Duration::from_secs(30));
    node.claim(2).await.unwrap();
    let running = JobFilter {
        status: Some(JobStatus::Running),
        limit: 50,
        ..JobFilter::default()
    };
    assert_eq!(store.list_jobs(&running).await.unwrap().jobs.len(), 2);
    let other_kind = JobFilter {
        kind: Some("nope".into()),
        limit: 50,
        ..JobFilter::default()
    };
    assert!(store.list_jobs(&other_kind).await.unwrap().jobs.is_empty());
    let counts = store.count_jobs().await.unwrap();
    let queued = counts
        .iter()
        .find(|count| count.status == "queued")
        .unwrap();
    assert_eq!(queued.count, 5);
}
on_both_backends!(pagination_and_filters_on, pagination_and_filters);

/// Proves the queue-depth count sees queued and running jobs only: a finished job leaves it,
/// while the full count still has it.
async fn live_counts_leave_out_finished_jobs(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    for _ in 0..3 {
        store.insert_job(&new_job(None)).await.unwrap();
    }
    let node = queue(&store, "node", Duration::from_secs(30));
    let claimed = node.claim(2).await.unwrap();
    node.complete(&claimed[0], &json!({})).await.unwrap();
    let mut live: Vec<(String, i64)> = store
        .count_live_jobs(bulwark_core::now_ms())
        .await
        .unwrap()
        .into_iter()
        .map(|count| (count.status, count.count))
        .collect();
    live.sort();
    assert_eq!(live, [("queued".to_owned(), 1), ("running".to_owned(), 1)]);
    let all = store.count_jobs().await.unwrap();
    assert!(
        all.iter()
            .any(|count| count.status == "succeeded" && count.count == 1)
    );
}
on_both_backends!(
    live_counts_leave_out_finished_jobs_on,
    live_counts_leave_out_finished_jobs
);

/// Proves the live counts carry the oldest due queued job's `run_at_ms`: a job delayed into the
/// future is counted but not taken as waiting, and none is due before the first was stored.
async fn live_counts_carry_the_oldest_due_job(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let first = store
        .insert_job(&new_job(None))
        .await
        .unwrap()
        .job()
        .clone();
    store.insert_job(&new_job(None)).await.unwrap();
    store
        .insert_job(&NewJob {
            run_at_ms: Some(bulwark_core::now_ms() + 60_000),
            ..new_job(None)
        })
        .await
        .unwrap();
    let live = store.count_live_jobs(bulwark_core::now_ms()).await.unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].count, 3);
    assert_eq!(live[0].oldest_due_at_ms, Some(first.run_at_ms));
    let none_due = store.count_live_jobs(first.run_at_ms - 1).await.unwrap();
    assert_eq!(none_due[0].oldest_due_at_ms, None);
}
on_both_backends!(
    live_counts_carry_the_oldest_due_job_on,
    live_counts_carry_the_oldest_due_job
);

/// Proves a job whose lease expired is claimed before queued jobs that are due, and that one
/// claim never returns more jobs than asked, whichever half they come from.
async fn expired_leases_are_claimed_first(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let dying = queue(&store, "dying-node", Duration::from_millis(1));
    let survivor = queue(&store, "survivor", Duration::from_secs(30));
    let orphan = store
        .insert_job(&new_job(None))
        .await
        .unwrap()
        .job()
        .id
        .clone();
    assert_eq!(dying.claim(1).await.unwrap()[0].id, orphan);
    for _ in 0..3 {
        store.insert_job(&new_job(None)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let claimed = survivor.claim(2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(
        claimed
            .iter()
            .any(|job| job.id == orphan && job.attempts == 2)
    );
    assert_eq!(survivor.claim(10).await.unwrap().len(), 2);
}
on_both_backends!(
    expired_leases_are_claimed_first_on,
    expired_leases_are_claimed_first
);

/// Proves migrations are idempotent: running them again on a migrated database is a no-op.
async fn migrations_rerun(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert!(store.get_job("missing").await.unwrap().is_none());
}
on_both_backends!(migrations_rerun_on, migrations_rerun);

/// Proves a delivered message's row is found in one statement by job id or by idempotency key,
/// and that a row created from a delivery is born claimed (running, attempt 1, leased to its
/// owner, already published) while a second creation under the same key returns that row.
async fn delivered_jobs_are_found_or_created_claimed(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let mut delivered = new_job(Some("message-7"));
    delivered.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned());
    assert!(
        find_delivered(&store, "message-7", "message-7")
            .await
            .is_none()
    );
    let lease_until = now_ms() + 60_000;
    let claimed = created(create_delivered(&store, &delivered, "node-a", lease_until).await);
    assert_eq!(claimed.status, JobStatus::Running);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.lease_owner.as_deref(), Some("node-a"));
    assert_eq!(claimed.lease_expires_at_ms, Some(lease_until));
    assert_eq!(
        claimed.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert!(
        !store.is_job_unpublished(&claimed.id).await.unwrap(),
        "a delivered job is on the broker already"
    );
    assert_eq!(
        create_delivered(&store, &delivered, "node-b", lease_until).await,
        DeliveredRow::Existing(claimed.clone()),
        "one row per key, returned unchanged (still node-a's)"
    );
    let by_key = find_delivered(&store, "message-7", "message-7")
        .await
        .expect("found by key");
    assert_eq!(by_key.id, claimed.id);
    let by_id = find_delivered(&store, &claimed.id, "some-other-key")
        .await
        .expect("found by id");
    assert_eq!(by_id.id, claimed.id);

    let finished = store
        .complete_job(LeaseRef::of(&claimed, "node-a"), &json!({"ok": true}))
        .await
        .unwrap()
        .expect("node-a holds the lease");
    assert_eq!(finished.status, JobStatus::Succeeded);
    assert_eq!(finished.result, Some(json!({"ok": true})));
    assert!(
        store
            .complete_job(LeaseRef::of(&claimed, "node-a"), &json!({}))
            .await
            .unwrap()
            .is_none(),
        "a finished job cannot finish twice"
    );
}

on_both_backends!(
    delivered_jobs_are_found_or_created_claimed_on,
    delivered_jobs_are_found_or_created_claimed
);

/// Proves the group-commit statements answer each request on its own: in one batch a new key
/// is created claimed, a key shared by two requests is created once and the second gets that
/// row, a stored key and a message naming a stored job's id get the stored row (by id before
/// key); lookups by id and by key come back in order, and only completions whose owner holds
/// the lease finish their job.
async fn batched_delivery_statements_answer_each_request(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let lease_until = now_ms() + 60_000;
    let stored =
        created(create_delivered(&store, &new_job(Some("stored")), "node-a", lease_until).await);
    let other_stored = created(
        create_delivered(
            &store,
            &new_job(Some("other-stored")),
            "node-a",
            lease_until,
        )
        .await,
    );
    let claimed = |key: &str, owner: &str| ClaimedInsert {
        message_id: format!("message-{key}"),
        new_job: new_job(Some(key)),
        owner: owner.to_owned(),
        lease_until_ms: lease_until,
    };
    // A message Bulwark published for a row it stored names that row's id; its key may name
    // another row, and the id wins.
    let published_by_intake = ClaimedInsert {
        message_id: stored.id.clone(),
        ..claimed("other-stored", "node-a")
    };
    let inserts = [
        claimed("b", "node-a"),
        claimed("stored", "node-a"),
        claimed("a", "node-b"),
        claimed("b", "node-b"),
        published_by_intake,
    ];
    let answers = store.create_delivered_jobs(&inserts).await.unwrap();
    let answers: Vec<DeliveredRow> = answers
        .into_iter()
        .map(|answer| answer.expect("every request answered"))
        .collect();
    let [first_b, stored_by_key, created_a, second_b, stored_by_id] =
        <[DeliveredRow; 5]>::try_from(answers).unwrap();
    let first_b = created(first_b);
    assert_eq!(first_b.idempotency_key.as_deref(), Some("b"));
    assert_eq!(first_b.lease_owner.as_deref(), Some("node-a"));
    assert_eq!(
        stored_by_key,
        DeliveredRow::Existing(stored.clone()),
        "a stored key"
    );
    let created_a = created(created_a);
    assert_eq!(created_a.lease_owner.as_deref(), Some("node-b"));
    assert_eq!(created_a.status, JobStatus::Running);
    assert_eq!(
        second_b,
        DeliveredRow::Existing(first_b.clone()),
        "the second `b` of the batch gets the first one's row"
    );
    assert_eq!(
        stored_by_id,
        DeliveredRow::Existing(stored.clone()),
        "a message naming a stored job's id gets that job, not the one its key names ({})",
        other_stored.id
    );
    let filter = JobFilter {
        limit: 100,
        ..JobFilter::default()
    };
    assert_eq!(
        store.list_jobs(&filter).await.unwrap().jobs.len(),
        4,
        "two stored rows and two created"
    );

    let lookup = |id: &str, key: &str| DeliveredKey {
        id: id.to_owned(),
        key: key.to_owned(),
    };
    let found = store
        .find_delivered_jobs(&[
            lookup("missing", "missing"),
            lookup(&stored.id, "unrelated"),
            lookup("other", "a"),
            lookup(&first_b.id, "a"),
        ])
        .await
        .unwrap();
    let found_ids: Vec<Option<&str>> = found
        .iter()
        .map(|job| job.as_ref().map(|job| job.id.as_str()))
        .collect();
    assert_eq!(
        found_ids,
        [
            None,
            Some(stored.id.as_str()),
            Some(created_a.id.as_str()),
            Some(first_b.id.as_str()),
        ],
        "by id first, then by key"
    );

    let completion = |id: &str, owner: &str| JobCompletion {
        id: id.to_owned(),
        owner: owner.to_owned(),
        attempt: 1,
        result: json!({ "job": id }),
    };
    let finished = store
        .complete_jobs(&[
            completion(&created_a.id, "node-b"),
            completion(&first_b.id, "node-b"),
            completion(&stored.id, "node-a"),
        ])
        .await
        .unwrap();
    let finished_a = finished[0].as_ref().expect("node-b holds `a`");
    assert_eq!(finished_a.status, JobStatus::Succeeded);
    assert_eq!(finished_a.result, Some(json!({ "job": created_a.id })));
    assert!(
        finished[1].is_none(),
        "node-a holds `b`, node-b cannot finish it"
    );
    assert_eq!(
        finished[2].as_ref().map(|job| job.status),
        Some(JobStatus::Succeeded)
    );
    let untouched = store.get_job(&first_b.id).await.unwrap().unwrap();
    assert_eq!(untouched.status, JobStatus::Running);
    assert_eq!(untouched.result, None);
}

on_both_backends!(
    batched_delivery_statements_answer_each_request_on,
    batched_delivery_statements_answer_each_request
);

/// Returns a job of `priority` that may first run at `run_at_ms` (`None`: now).
fn job_at(priority: u8, run_at_ms: Option<i64>) -> NewJob {
    NewJob {
        priority,
        run_at_ms,
        ..new_job(None)
    }
}

/// Proves due jobs are claimed highest priority first, then in the order they became due (a
/// time already past when the job is stored counts as that moment, so it cannot jump the
/// queue), and that a job delayed into the future is not claimed, whatever its priority, until
/// it is due.
async fn due_jobs_are_claimed_by_priority_then_due_time(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let now = now_ms();
    let jobs = [
        job_at(1, Some(now - 3_000)),
        job_at(9, Some(now + 60_000)),
        job_at(5, Some(now - 1_000)),
        job_at(5, Some(now - 2_000)),
        job_at(9, None),
        job_at(0, None),
    ];
    let outcomes = store
        .insert_job_batch(&jobs, JobRoute::Local)
        .await
        .unwrap();
    let ids: Vec<String> = outcomes
        .iter()
        .map(|outcome| outcome.job().id.clone())
        .collect();
    let node = queue(&store, "node-a", Duration::from_secs(60));
    let claimed: Vec<String> = node
        .claim(10)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    let expected = [&ids[4], &ids[2], &ids[3], &ids[0], &ids[5]].map(String::clone);
    assert_eq!(claimed, expected, "priority first, then due time");
    assert!(
        node.claim(10).await.unwrap().is_empty(),
        "the delayed job waits for its time"
    );
    let delayed = store.get_job(&ids[1]).await.unwrap().unwrap();
    assert_eq!(delayed.status, JobStatus::Queued);
    assert_eq!(delayed.priority, 9);
    assert_eq!(delayed.run_at_ms, now + 60_000);
    let past = store.get_job(&ids[0]).await.unwrap().unwrap();
    assert_eq!(
        past.run_at_ms, past.created_at_ms,
        "a past time is the time stored"
    );
}

on_both_backends!(
    due_jobs_are_claimed_by_priority_then_due_time_on,
    due_jobs_are_claimed_by_priority_then_due_time
);

/// Proves a job of higher priority overtakes a backlog of 1,000 older jobs of lower priority:
/// it is the first claimed, and the backlog follows in order.
async fn priority_overtakes_a_backlog(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let backlog: Vec<NewJob> = (0..1_000).map(|_| job_at(2, None)).collect();
    store
        .insert_job_batch(&backlog, JobRoute::Local)
        .await
        .unwrap();
    let urgent = store
        .insert_job_batch(&[job_at(7, None)], JobRoute::Local)
        .await
        .unwrap()
        .remove(0);
    let node = queue(&store, "node-a", Duration::from_secs(60));
    let first = node.claim(1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, urgent.job().id, "the urgent job overtakes");
    let next = node.claim(5).await.unwrap();
    assert!(next.iter().all(|job| job.priority == 2), "then the backlog");
    assert!(
        next.windows(2).all(|pair| pair[0].id < pair[1].id),
        "oldest first"
    );
}

on_both_backends!(
    priority_overtakes_a_backlog_on,
    priority_overtakes_a_backlog
);

/// Proves the outbox hands the republisher a delayed broker job only once it is due, however
/// young, and an immediate one only after its submitter's grace.
async fn delayed_broker_jobs_leave_the_outbox_when_due(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let now = now_ms();
    let jobs = [
        job_at(5, Some(now + 60_000)),
        job_at(5, Some(now - 1)),
        job_at(5, None),
    ];
    let outcomes = store
        .insert_job_batch(&jobs, JobRoute::BrokerPending)
        .await
        .unwrap();
    let ids: Vec<&str> = outcomes
        .iter()
        .map(|outcome| outcome.job().id.as_str())
        .collect();
    let created_before_grace = now - 5_000;
    let outbox: Vec<String> = store
        .unpublished_jobs(created_before_grace, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    assert!(
        outbox.is_empty(),
        "nothing is due that its submitter does not publish itself: {outbox:?}"
    );
    let after_grace: Vec<String> = store
        .unpublished_jobs(i64::MAX, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(
        after_grace,
        [ids[1], ids[2]],
        "due jobs, earliest due first; the delayed one waits"
    );
}

on_both_backends!(
    delayed_broker_jobs_leave_the_outbox_when_due_on,
    delayed_broker_jobs_leave_the_outbox_when_due
);

/// Finishes `job` (claimed by `node`) as `status`: succeeded with a result, else failed or dead.
async fn finish(node: &LocalQueue, job: &Job, status: JobStatus) {
    let stored = match status {
        JobStatus::Succeeded => node.complete(job, &json!({"ok": true})).await.unwrap(),
        _ => {
            let failure = JobFailure {
                code: "VALIDATION_FAILED".to_owned(),
                message: "bad".to_owned(),
                retry_at_ms: None,
                final_status: status,
                refund_attempt: false,
            };
            node.fail(job, &failure).await.unwrap()
        }
    };
    assert_eq!(stored.expect("lease held").status, status);
}

/// Proves the pruner's statement deletes only finished jobs of the status it is given that
/// finished before the cutoff, oldest first and at most `limit`, keeps a dead job whose dead
/// letter is still open, and refuses a status that is not finished.
async fn pruning_deletes_only_expired_finished_jobs(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let jobs: Vec<NewJob> = (0..7).map(|_| job_at(5, None)).collect();
    store
        .insert_job_batch(&jobs, JobRoute::Local)
        .await
        .unwrap();
    let node = queue(&store, "node-a", Duration::from_secs(60));
    let claimed = node.claim(6).await.unwrap();
    // Three succeeded, one dead with an open letter, one dead without, one still running and
    // one still queued.
    for job in &claimed[..3] {
        finish(&node, job, JobStatus::Succeeded).await;
    }
    finish(&node, &claimed[3], JobStatus::Dead).await;
    finish(&node, &claimed[4], JobStatus::Dead).await;
    store
        .upsert_dead_letter(&NewDeadLetter {
            source: "local",
            source_key: format!("local:{}", claimed[3].id),
            job_id: claimed[3].id.clone(),
            queue: "sentiment.analyze".to_owned(),
            kind: "sentiment.analyze".to_owned(),
            message: "{}".to_owned(),
            headers: None,
            error_code: "VALIDATION_FAILED".to_owned(),
            error_message: "bad".to_owned(),
            retriable: false,
            request_id: None,
            trace_id: None,
            status: "parked",
            next_retry_at_ms: None,
            dead_at_ms: now_ms(),
        })
        .await
        .unwrap();

    let before_any_finished = now_ms() - 60_000;
    assert_eq!(
        store
            .prune_finished_jobs(JobStatus::Succeeded, before_any_finished, 100)
            .await
            .unwrap(),
        0,
        "nothing finished before the cutoff"
    );
    let later = now_ms() + 1_000;
    assert_eq!(
        store
            .prune_finished_jobs(JobStatus::Succeeded, later, 2)
            .await
            .unwrap(),
        2,
        "at most the limit"
    );
    assert_eq!(
        store
            .prune_finished_jobs(JobStatus::Succeeded, later, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .prune_finished_jobs(JobStatus::Dead, later, 100)
            .await
            .unwrap(),
        1,
        "the dead job with an open letter is kept"
    );
    assert!(store.get_job(&claimed[3].id).await.unwrap().is_some());
    assert!(store.get_job(&claimed[4].id).await.unwrap().is_none());
    assert!(
        store
            .prune_finished_jobs(JobStatus::Running, later, 100)
            .await
            .is_err(),
        "live jobs are never pruned"
    );
    let filter = JobFilter {
        limit: 100,
        ..JobFilter::default()
    };
    let left: Vec<JobStatus> = store
        .list_jobs(&filter)
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|job| job.status)
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains(&JobStatus::Running) && left.contains(&JobStatus::Queued));
}

on_both_backends!(
    pruning_deletes_only_expired_finished_jobs_on,
    pruning_deletes_only_expired_finished_jobs
);

/// Proves a job's result TTL deletes it once it finished that long ago, whatever its status,
/// soonest expired first and at most the limit: a running job with a TTL, a finished job
/// whose TTL has not run out and a finished job without one are kept.
async fn result_ttls_delete_finished_jobs(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let with_ttl = |ttl_ms: Option<i64>| NewJob {
        result_ttl_ms: ttl_ms,
        ..job_at(5, None)
    };
    let jobs = [
        with_ttl(Some(1_000)),
        with_ttl(Some(1_000)),
        with_ttl(Some(60_000)),
        with_ttl(None),
        with_ttl(Some(1_000)),
    ];
    let ids: Vec<String> = store
        .insert_job_batch(&jobs, JobRoute::Local)
        .await
        .unwrap()
        .iter()
        .map(|outcome| outcome.job().id.clone())
        .collect();
    let node = queue(&store, "node-a", Duration::from_secs(60));
    let claimed = node.claim(5).await.unwrap();
    for job in &claimed {
        if job.id == ids[4] {
            continue;
        }
        let status = if job.id == ids[1] {
            JobStatus::Dead
        } else {
            JobStatus::Succeeded
        };
        finish(&node, job, status).await;
    }
    let stored = store.get_job(&ids[0]).await.unwrap().expect("stored");
    assert_eq!(stored.result_ttl_ms, Some(1_000));
    let now = now_ms();
    assert_eq!(
        store.prune_expired_jobs(now, 100).await.unwrap(),
        0,
        "none ran out yet"
    );
    let later = now + 5_000;
    assert_eq!(
        store.prune_expired_jobs(later, 1).await.unwrap(),
        1,
        "the limit"
    );
    assert_eq!(store.prune_expired_jobs(later, 100).await.unwrap(), 1);
    assert!(store.get_job(&ids[0]).await.unwrap().is_none());
    assert!(
        store.get_job(&ids[1]).await.unwrap().is_none(),
        "dead, and expired"
    );
    for kept in &ids[2..] {
        assert!(
            store.get_job(kept).await.unwrap().is_some(),
            "{kept} is kept"
        );
    }
    assert_eq!(
        store.prune_expired_jobs(now + 120_000, 100).await.unwrap(),
        1,
        "the 60 s TTL ran out too; the running job and the one without a TTL stay"
    );
}

on_both_backends!(
    result_ttls_delete_finished_jobs_on,
    result_ttls_delete_finished_jobs
);
