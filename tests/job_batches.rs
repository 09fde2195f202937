//! `POST /v1/jobs/batch` and `bulwark enqueue` against a node booted on port 0, on SQLite and
//! the real PostgreSQL.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use bulwark_store::on_both_backends;
use bulwark_store::testsuite::TestBackend;
use common::{TestService, client_with_key};
use serde_json::{Value, json};

fn sentiment(text: &str) -> Value {
    json!({ "texts": [text] })
}

/// Returns each result's status, in order.
fn statuses(answer: &Value) -> Vec<&str> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| result["status"].as_str().expect("a status"))
        .collect()
}

/// Proves one batch answers every job on its own, in order: created jobs run to success,
/// a replay of a stored job is `existing` with its id, a reused key with another payload is
/// `conflict` naming the job, invalid jobs name the field and store nothing, a key repeated
/// in the batch behaves as if submitted in order, and `counts` sums it up; all with 200.
async fn a_batch_answers_each_job(backend: TestBackend) {
    let service = TestService::start(backend).await;
    let (status, single) = service
        .post_json(
            "/v1/jobs",
            &json!({"kind": "sentiment.analyze", "payload": sentiment("stored"),
                "idempotency_key": "stored"}),
        )
        .await;
    assert_eq!(status, 202, "{single}");
    let stored_id = single["id"].as_str().unwrap().to_owned();
    let batch = json!({"jobs": [
        {"kind": "sentiment.analyze", "payload": sentiment("a great day"), "idempotency_key": "new"},
        {"kind": "sentiment.analyze", "payload": sentiment("stored"), "idempotency_key": "stored"},
        {"kind": "sentiment.analyze", "payload": sentiment("changed"), "idempotency_key": "stored"},
        {"kind": "sentiment.analyze", "payload": {"texts": []}},
        {"kind": "video.render", "payload": {}},
        {"kind": "sentiment.analyze", "payload": sentiment("again"), "idempotency_key": "new"},
        {"kind": "sentiment.analyze", "payload": sentiment("a great day"), "idempotency_key": "new"},
        {"kind": "sentiment.analyze", "payload": sentiment("no key")},
    ]});
    let (status, answer) = service.post_json("/v1/jobs/batch", &batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        statuses(&answer),
        [
            "created", "existing", "conflict", "invalid", "invalid", "conflict", "existing",
            "created"
        ]
    );
    let results = answer["results"].as_array().unwrap();
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result["index"], index);
    }
    assert_eq!(results[1]["job_id"], stored_id.as_str());
    let conflict = results[2]["error"].as_str().unwrap();
    assert!(
        conflict.starts_with("idempotency_key:") && conflict.contains(&stored_id),
        "{conflict}"
    );
    assert!(results[2].get("job_id").is_none(), "{}", results[2]);
    assert!(
        results[3]["error"]
            .as_str()
            .unwrap()
            .starts_with("payload.texts"),
        "{}",
        results[3]
    );
    assert!(
        results[4]["error"]
            .as_str()
            .unwrap()
            .starts_with("kind: must be one of"),
        "{}",
        results[4]
    );
    assert!(results[3].get("job_id").is_none());
    assert_eq!(results[6]["job_id"], results[0]["job_id"]);
    assert_eq!(
        answer["counts"],
        json!({"created": 2, "existing": 2, "conflict": 2, "invalid": 2})
    );
    for created in [&results[0], &results[7]] {
        let job = service
            .wait_for_job(created["job_id"].as_str().unwrap())
            .await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let (_, page) = service.get_json("/v1/jobs?limit=100").await;
    assert_eq!(
        page["jobs"].as_array().unwrap().len(),
        3,
        "nothing stored for invalid or conflicting jobs"
    );
    service.service.shutdown().await.unwrap();
}
on_both_backends!(
    a_batch_answers_each_job_on,
    a_batch_answers_each_job,
    multi_thread
);

/// Proves the batch as a whole is refused, storing nothing, when it is empty (400), holds
/// more than 1,000 jobs (413, naming the limit), is not `{"jobs": [...]}` (422), or comes
/// with a key lacking the `submit` scope (403); and that a full batch of 1,000 is taken.
async fn a_bad_batch_is_refused_as_a_whole(backend: TestBackend) {
    let service = TestService::start(backend).await;
    let job = json!({"kind": "sentiment.analyze", "payload": sentiment("fine")});
    let (status, body) = service
        .post_json("/v1/jobs/batch", &json!({"jobs": []}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("at least 1 job"));
    let too_many = vec![job.clone(); 1001];
    let (status, body) = service
        .post_json("/v1/jobs/batch", &json!({ "jobs": too_many }))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("at most 1000 per batch"),
        "{body}"
    );
    let (status, body) = service
        .post_json("/v1/jobs/batch", &json!([job.clone()]))
        .await;
    assert_eq!(status, 422, "{body}");
    let (_, page) = service.get_json("/v1/jobs?limit=10").await;
    assert!(page["jobs"].as_array().unwrap().is_empty(), "{page}");

    let reader_key = service
        .service
        .auth
        .authenticator
        .create_key(&bulwark_auth::NewKey {
            name: "reader".to_owned(),
            scopes: bulwark_auth::Scopes::new(&[bulwark_auth::Scope::Read]),
            expires_at_ms: None,
            daily_provider_calls: None,
        })
        .await
        .unwrap()
        .token;
    let response = client_with_key(&reader_key)
        .post(service.url("/v1/jobs/batch"))
        .json(&json!({ "jobs": [job.clone()] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let full = vec![job; 1000];
    let (status, answer) = service
        .post_json("/v1/jobs/batch", &json!({ "jobs": full }))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["counts"]["created"], 1000);
    service.service.shutdown().await.unwrap();
}
on_both_backends!(
    a_bad_batch_is_refused_as_a_whole_on,
    a_bad_batch_is_refused_as_a_whole,
    multi_thread
);

/// Proves the OpenAPI document describes the operation: `submit` scope, the body's 1 to
/// 1,000 jobs of the single submission's schema, and the per-job result statuses.
async fn the_document_describes_the_batch(backend: TestBackend) {
    let service = TestService::start(backend).await;
    let (status, document) = service.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let operation = &document["paths"]["/v1/jobs/batch"]["post"];
    assert_eq!(operation["operationId"], "submit_job_batch");
    assert!(
        operation["security"][0].get("submit").is_some(),
        "{operation}"
    );
    let schemas = &document["components"]["schemas"];
    let jobs = &schemas["JobBatchSubmission"]["properties"]["jobs"];
    assert_eq!(
        (jobs["minItems"].as_u64(), jobs["maxItems"].as_u64()),
        (Some(1), Some(1000)),
        "{jobs}"
    );
    assert_eq!(
        jobs["items"]["$ref"], "#/components/schemas/JobSubmission",
        "{jobs}"
    );
    assert_eq!(
        schemas["JobBatchItemStatus"]["enum"],
        json!(["created", "existing", "conflict", "invalid"])
    );
    service.service.shutdown().await.unwrap();
}
on_both_backends!(
    the_document_describes_the_batch_on,
    the_document_describes_the_batch,
    multi_thread
);

/// Runs `bulwark enqueue` against `url` with `key`, feeding `stdin` when the file is `-`.
fn enqueue(url: &str, key: &str, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .arg("enqueue")
        .args(["--url", url])
        .args(args)
        .env("BULWARK_LOG", "error")
        .env("BULWARK_API_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bulwark runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    child.wait_with_output().expect("bulwark finishes")
}

/// Proves `bulwark enqueue` sends a JSONL file in batches of `--batch-size`: good lines are
/// stored, a malformed line and an invalid job are reported with their line numbers and
/// reasons, a reused key with another payload is a conflict, the counts are printed, and the
/// exit code is 1; a clean file from stdin exits 0 and a rerun finds every job existing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_cli_reports_each_line() {
    let service = TestService::start(TestBackend::Sqlite).await;
    let job_line = |key: &str, text: &str| {
        json!({"kind": "sentiment.analyze", "payload": sentiment(text), "idempotency_key": key})
            .to_string()
    };
    let file_lines = [
        job_line("line-1", "one"),
        String::new(),
        "{not json".to_owned(),
        job_line("line-4", "four"),
        json!({"kind": "sentiment.analyze", "payload": {"texts": []}}).to_string(),
        job_line("line-1", "changed"),
        job_line("line-7", "seven"),
    ];
    let dir = std::env::temp_dir().join(format!("bulwark-enqueue-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jobs.jsonl");
    std::fs::write(&path, file_lines.join("\n")).unwrap();
    let (url, key) = (service.base_url.clone(), service.admin_key.clone());
    let file_arg = path.display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        enqueue(&url, &key, &["--file", &file_arg, "--batch-size", "2"], "")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("created 3, existing 0, conflict 1, invalid 2"),
        "{stdout}"
    );
    assert!(stderr.contains("line 3: invalid: not JSON"), "{stderr}");
    assert!(
        stderr.contains("line 5: invalid: payload.texts"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 6: conflict: idempotency_key: already used"),
        "{stderr}"
    );
    let (_, page) = service.get_json("/v1/jobs?limit=100").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3, "{page}");

    let clean = [job_line("line-1", "one"), job_line("line-7", "seven")].join("\n");
    let (url, key) = (service.base_url.clone(), service.admin_key.clone());
    let output = tokio::task::spawn_blocking(move || enqueue(&url, &key, &["--file", "-"], &clean))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("created 0, existing 2, conflict 0, invalid 0"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    service.service.shutdown().await.unwrap();
}
