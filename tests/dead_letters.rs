//! Dead letters on a running service: jobs that died on a broken node are stored once,
//! retried automatically or requeued by an operator (one by one and in bulk) under their
//! original id, and succeed once the fault is gone; bad input to every endpoint is refused.

mod common;

use std::time::Duration;

use bulwark_store::testsuite::TestBackend;
use bulwark_store::{JobFailure, JobStatus, LeaseRef, NewJob, Store};
use bulwark_test_support::eventually;
use common::TestService;
use serde_json::{Value, json};

async fn start(backend: TestBackend) -> TestService {
    TestService::start_with(backend, |config| {
        // The runner polls only when told (requeues notify it), so the test's broken node
        // below can claim the jobs it inserts first.
        config.jobs.poll_interval_ms = 600_000;
        config.dead_letters.scan_interval_ms = 100;
        config.dead_letters.recovery_interval_ms = 100;
        config.dead_letters.retry_backoff_ms = 50;
        config.dead_letters.retry_backoff_max_ms = 100;
        config.dead_letters.max_retries = 2;
    })
    .await
}

/// Creates a job and records it as the given final failure, as a broken node would.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn job_dies(store: &Store, text: &str, code: &str, final_status: JobStatus) -> String {
    let outcome = store
        .insert_job(&NewJob {
            kind: "sentiment.analyze".to_owned(),
            payload: json!({"texts": [text]}),
            idempotency_key: Some(format!("dlq-test-{text}")),
            request_id: Some(format!("req-{text}")),
            trace_id: Some(TRACE_ID.to_owned()),
            max_attempts: 3,
            priority: bulwark_store::DEFAULT_PRIORITY,
            run_at_ms: None,
            timeout_ms: None,
            result_ttl_ms: None,
        })
        .await
        .unwrap();
    let job_id = outcome.job().id.clone();
    let claimed = store
        .claim_jobs("broken-node", i64::MAX / 2, 100)
        .await
        .unwrap();
    assert!(
        claimed.iter().any(|job| job.id == job_id),
        "the broken node claimed the job"
    );
    let failure = JobFailure {
        code: code.to_owned(),
        message: "the broken node could not do it".to_owned(),
        retry_at_ms: None,
        final_status,
        refund_attempt: false,
    };
    assert!(
        store
            .fail_job(
                LeaseRef {
                    job_id: &job_id,
                    owner: "broken-node",
                    attempt: 1,
                },
                &failure,
            )
            .await
            .unwrap()
            .is_some()
    );
    job_id
}

/// Stops or starts the node's job runner as an operator would (`action` is `stop` or `start`).
async fn runner_control(service: &TestService, action: &str) {
    let (status, body) = service
        .post_json(
            &format!("/v1/ops/supervisors/root.jobs.job-runner/{action}"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{action} the job runner: {body}");
}

async fn letter_of(service: &TestService, job_id: &str, status: &str) -> Value {
    eventually(Duration::from_secs(20), || async {
        let (_, page) = service
            .get_json(&format!("/v1/dead-letters?status={status}&limit=500"))
            .await;
        page["dead_letters"].as_array().and_then(|letters| {
            letters
                .iter()
                .find(|letter| letter["job_id"] == job_id)
                .cloned()
        })
    })
    .await
}

/// Proves a job that died with a retriable error is stored as a dead letter with its original
/// message, retried automatically under the same id, and marked recovered once it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_dead_job_is_retried_and_recovers() {
    let service = start(TestBackend::Postgres).await;
    let store = &service.service.store;
    // On PostgreSQL the insert's notification wakes the node's runner, which could claim the
    // job before the broken node does; the runner is stopped until the job has died.
    runner_control(&service, "stop").await;
    let job_id = job_dies(store, "retry me", "SERVICE_UNAVAILABLE", JobStatus::Dead).await;
    runner_control(&service, "start").await;
    let recovered = letter_of(&service, &job_id, "recovered").await;
    assert_eq!(recovered["queue"], "local");
    assert_eq!(recovered["error_code"], "SERVICE_UNAVAILABLE");
    assert_eq!(recovered["retriable"], true);
    assert_eq!(recovered["retry_count"], 1);
    assert_eq!(recovered["request_id"], "req-retry me");
    assert_eq!(recovered["trace_id"], TRACE_ID, "{recovered}");
    assert_eq!(
        recovered["message"]["payload"],
        json!({"texts": ["retry me"]})
    );
    let job = service.wait_for_job(&job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["id"], job_id.as_str(), "requeued under its original id");

    let metrics = service.get_text("/metrics").await;
    assert!(
        metrics.contains("bulwark_dead_lettered_total"),
        "dead-lettered counter"
    );
    assert!(metrics.contains("bulwark_dead_letters_recovered_total"));
}

/// Proves a permanently failed job is parked (no automatic retry), then an operator's requeue
/// runs it again under its id until it succeeds; bulk requeue by error code does the same for
/// several; stats count them; purge refuses an empty filter and deletes by status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_requeues_parked_letters_one_by_one_and_in_bulk() {
    let service = start(TestBackend::Sqlite).await;
    let store = &service.service.store;
    let single = job_dies(store, "single", "INTERNAL_ERROR", JobStatus::Failed).await;
    let parked = letter_of(&service, &single, "parked").await;
    assert_eq!(parked["retriable"], false);
    let letter_path = format!("/v1/dead-letters/{}", parked["id"].as_str().unwrap());
    let (status, shown) = service.get_json(&letter_path).await;
    assert_eq!(status, 200);
    assert_eq!(shown["job_id"], single.as_str());

    let (status, requeued) = service
        .post_json(&format!("{letter_path}/requeue"), &json!({}))
        .await;
    assert_eq!(status, 200, "{requeued}");
    assert_eq!(requeued["status"], "requeued");
    assert_eq!(service.wait_for_job(&single).await["status"], "succeeded");
    letter_of(&service, &single, "recovered").await;
    let (status, error) = service
        .post_json(&format!("{letter_path}/requeue"), &json!({}))
        .await;
    assert_eq!(
        status, 409,
        "a recovered letter is not requeued again: {error}"
    );

    let mut bulk_ids = Vec::new();
    for index in 0..5 {
        bulk_ids.push(
            job_dies(
                store,
                &format!("bulk-{index}"),
                "UPSTREAM_TIMEOUT",
                JobStatus::Failed,
            )
            .await,
        );
    }
    for job_id in &bulk_ids {
        letter_of(&service, job_id, "parked").await;
    }
    let (status, stats) = service.get_json("/v1/dead-letters/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["depth"], 5, "{stats}");
    assert!(
        stats["by_error_code"]
            .as_array()
            .unwrap()
            .iter()
            .any(|count| count["error_code"] == "UPSTREAM_TIMEOUT" && count["count"] == 5)
    );
    let (status, result) = service
        .post_json(
            "/v1/dead-letters/requeue",
            &json!({"error_code": "UPSTREAM_TIMEOUT"}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["num_changed"], 5);
    for job_id in &bulk_ids {
        assert_eq!(service.wait_for_job(job_id).await["status"], "succeeded");
        letter_of(&service, job_id, "recovered").await;
    }

    let purge_all = service
        .client
        .delete(service.url("/v1/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        purge_all.status().as_u16(),
        422,
        "an empty purge filter is refused"
    );
    let purged: Value = service
        .client
        .delete(service.url("/v1/dead-letters?status=recovered"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(purged["num_changed"], 6);
    assert_eq!(service.get_json(&letter_path).await.0, 404);
}

/// Proves every dead-letter endpoint refuses bad input: 422 naming the field, 404 for unknown
/// ids, 400 for malformed JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused() {
    let service = start(TestBackend::Sqlite).await;
    for query in ["status=lost", "limit=0", "limit=501", "cursor=nope"] {
        let (status, error) = service.get_json(&format!("/v1/dead-letters?{query}")).await;
        assert_eq!(status, 422, "{query}: {error}");
        let field = query.split('=').next().unwrap();
        assert!(
            error["message"].as_str().unwrap().starts_with(field),
            "{error}"
        );
    }
    let unknown = "/v1/dead-letters/0190d5a0-0000-7000-8000-000000000000";
    assert_eq!(service.get_json(unknown).await.0, 404);
    for action in ["requeue", "park"] {
        let (status, error) = service
            .post_json(&format!("{unknown}/{action}"), &json!({}))
            .await;
        assert_eq!(status, 404, "{action}: {error}");
    }
    let bulk_cases = [
        (json!({}), "all:"),
        (json!({"status": "lost"}), "status:"),
        (json!({"all": true, "limit": 0}), "limit:"),
    ];
    for (body, field) in bulk_cases {
        let (status, error) = service.post_json("/v1/dead-letters/requeue", &body).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert!(
            error["message"].as_str().unwrap().starts_with(field),
            "{error}"
        );
    }
    let (status, _) = service
        .post_json("/v1/dead-letters/requeue", &json!({"colour": "red"}))
        .await;
    assert_eq!(status, 422, "unknown fields are refused, named");
    let malformed = service
        .client
        .post(service.url("/v1/dead-letters/requeue"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 400);
    let bad_purge = service
        .client
        .delete(service.url("/v1/dead-letters?status=lost"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_purge.status().as_u16(), 422);
    let (status, stats) = service.get_json("/v1/dead-letters/stats").await;
    assert_eq!((status, stats["depth"].as_i64()), (200, Some(0)));
}
