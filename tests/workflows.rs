//! Workflows end to end over HTTP: a fan-out/fan-in graph on every transport (SQLite,
//! PostgreSQL, RabbitMQ), a failing parent cancelling its dependants (or not, with the `run`
//! policy), the graph view, and the refusals that store nothing.

mod common;

use std::time::Duration;

use bulwark_config::Config;
use bulwark_store::testsuite::TestBackend;
use common::broker::delete_namespace;
use common::{TestService, Transport};
use serde_json::{Value, json};

/// How often these tests' nodes resolve waits.
const CONTROL_INTERVAL_MS: u64 = 50;

fn settings(config: &mut Config) {
    config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
    config.jobs.control_interval_ms = CONTROL_INTERVAL_MS;
}

/// Returns the graph body of a fan-out/fan-in: `root`, `fan` children of it, and `total`
/// summing them up.
fn fan_out_fan_in(fan: usize) -> Value {
    let mut jobs = vec![
        json!({"key": "root", "kind": "sentiment.analyze", "payload": {"texts": ["the start"]}}),
    ];
    let texts = ["great product, works well", "terrible, it broke at once"];
    for index in 0..fan {
        jobs.push(json!({
            "key": format!("part-{index}"),
            "kind": "sentiment.analyze",
            "payload": {"texts": [texts[index % 2]]},
            "depends_on": ["root"],
        }));
    }
    let parts: Vec<String> = (0..fan).map(|index| format!("part-{index}")).collect();
    jobs.push(
        json!({"key": "total", "kind": "sentiment.aggregate", "payload": {}, "depends_on": parts}),
    );
    json!({ "jobs": jobs })
}

/// Returns the id of the stored job under `key` in a graph answer.
fn id_of(stored: &Value, key: &str) -> String {
    stored["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|job| job["key"] == key)
        .and_then(|job| job["job"]["id"].as_str())
        .unwrap_or_else(|| panic!("no job `{key}` in {stored}"))
        .to_owned()
}

async fn fan_scenario(transport: Transport) {
    let (service, namespace_opt) = transport.start(settings).await;
    let (status, stored) = service
        .post_json("/v1/jobs/graph", &fan_out_fan_in(20))
        .await;
    assert_eq!(status, 202, "{transport:?}: {stored}");
    let total_id = id_of(&stored, "total");
    let (_, waiting) = service.get_json(&format!("/v1/jobs/{total_id}")).await;
    assert_eq!(waiting["waiting_on_parents"], true, "{waiting}");

    let total = service.wait_for_job(&total_id).await;
    assert_eq!(total["status"], "succeeded", "{transport:?}: {total}");
    let summary = &total["result"];
    assert_eq!(summary["num_parents"], 20, "{summary}");
    assert_eq!(summary["num_used"], 20, "{summary}");
    assert_eq!(summary["num_texts"], 20, "{summary}");
    assert_eq!(summary["labels"]["positive"], 10, "{summary}");
    assert_eq!(summary["labels"]["negative"], 10, "{summary}");
    assert!(summary["skipped"].as_array().is_some_and(Vec::is_empty));
    // Every part ran after the root finished, and the total after every part.
    let root = service.wait_for_job(&id_of(&stored, "root")).await;
    for index in 0..20 {
        let part = service
            .wait_for_job(&id_of(&stored, &format!("part-{index}")))
            .await;
        assert_eq!(part["status"], "succeeded");
        assert!(
            part["started_at"].as_str() >= root["finished_at"].as_str(),
            "{part} {root}"
        );
        assert!(
            total["started_at"].as_str() >= part["finished_at"].as_str(),
            "{part} {total}"
        );
    }

    let (status, graph) = service
        .get_json(&format!("/v1/jobs/{}/graph", id_of(&stored, "part-7")))
        .await;
    assert_eq!(status, 200, "{graph}");
    assert_eq!(graph["jobs"].as_array().map(Vec::len), Some(22), "{graph}");
    assert_eq!(graph["edges"].as_array().map(Vec::len), Some(40), "{graph}");
    assert_eq!(graph["truncated"], false);
    assert!(
        graph["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .all(|job| job["status"] == "succeeded"),
        "{graph}"
    );
    service.service.shutdown().await.expect("stops");
    if let Some(namespace) = namespace_opt {
        delete_namespace(&namespace).await;
    }
}

/// Proves the fan-out/fan-in workflow on every transport: one root, 20 sentiment jobs that
/// wait for it, one `sentiment.aggregate` job that waits for the 20 and sums up their results
/// (20 texts, 10 positive, 10 negative); each level starts only after the one before finished,
/// and the graph view from any job shows all 22 jobs and 40 edges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_fan_in_workflow_runs_on_every_transport() {
    for transport in Transport::ALL {
        tokio::time::timeout(Duration::from_secs(90), fan_scenario(transport))
            .await
            .unwrap_or_else(|_| panic!("{transport:?}: the workflow did not finish in 90 s"));
    }
}

/// Waits until job `id` is in `status` and returns it.
async fn wait_for_status(service: &TestService, id: &str, status: &str) -> Value {
    let path = format!("/v1/jobs/{id}");
    bulwark_test_support::eventually(Duration::from_secs(20), || async {
        let (_, job) = service.get_json(&path).await;
        (job["status"] == status).then_some(job)
    })
    .await
}

/// Proves a parent that fails cancels the jobs waiting for it, in turn (a child, then its
/// child), with `CANCELLED`, never running them; with `on_parent_failure: run` the child runs
/// anyway; and a single submission may wait for a stored job by id.
#[tokio::test]
async fn a_failing_parent_cancels_its_dependants() {
    let service = TestService::start_with(TestBackend::Postgres, settings).await;
    // A provider that is not configured: the root fails for good.
    let failing = json!({"key": "root", "kind": "provider.complete", "payload": {"provider": "none", "prompt": "x"}});
    let (status, stored) = service
        .post_json(
            "/v1/jobs/graph",
            &json!({"jobs": [
                failing,
                {"key": "child", "kind": "sentiment.analyze", "payload": {"texts": ["a"]}, "depends_on": ["root"]},
                {"key": "grandchild", "kind": "sentiment.aggregate", "payload": {}, "depends_on": ["child"]},
            ]}),
        )
        .await;
    assert_eq!(status, 202, "{stored}");
    let root = service.wait_for_job(&id_of(&stored, "root")).await;
    assert_eq!(root["status"], "failed", "{root}");
    for key in ["child", "grandchild"] {
        let job = wait_for_status(&service, &id_of(&stored, key), "cancelled").await;
        assert_eq!(job["error"]["code"], "CANCELLED", "{job}");
        assert_eq!(job["attempts"], 0, "never ran: {job}");
    }

    let (status, anyway) = service
        .post_json(
            "/v1/jobs/graph",
            &json!({"on_parent_failure": "run", "jobs": [
                {"key": "root", "kind": "provider.complete", "payload": {"provider": "none", "prompt": "y"}},
                {"key": "child", "kind": "sentiment.analyze", "payload": {"texts": ["b"]}, "depends_on": ["root"]},
            ]}),
        )
        .await;
    assert_eq!(status, 202, "{anyway}");
    let child = service.wait_for_job(&id_of(&anyway, "child")).await;
    assert_eq!(child["status"], "succeeded", "{child}");

    let (status, single) = service
        .post_json(
            "/v1/jobs",
            &json!({"kind": "sentiment.aggregate", "payload": {}, "depends_on": [child["id"]]}),
        )
        .await;
    assert_eq!(status, 202, "{single}");
    let single = service
        .wait_for_job(single["id"].as_str().expect("id"))
        .await;
    assert_eq!(single["status"], "succeeded", "{single}");
    assert_eq!(single["result"]["num_used"], 1, "{single}");
    service.service.shutdown().await.expect("stops");
}

/// Proves bad workflows are refused with `422` naming the field, and nothing is stored: a
/// cycle (named by its keys), an unknown parent, a key used twice, an aggregate that waits for
/// nothing, a wait with a delay, a wait inside a batch, an unknown id in `depends_on`.
#[tokio::test]
async fn bad_workflows_are_refused_and_store_nothing() {
    let service = TestService::start_with(TestBackend::Sqlite, settings).await;
    let analyze = |key: &str, depends_on: &[&str]| json!({"key": key, "kind": "sentiment.analyze", "payload": {"texts": ["t"]}, "depends_on": depends_on});
    let cases = [
        (
            "/v1/jobs/graph",
            json!({"jobs": [analyze("a", &[]), analyze("b", &["a", "d"]), analyze("c", &["b"]), analyze("d", &["c"])]}),
            "jobs[1].depends_on: a cycle (b -> d -> c -> b)",
        ),
        (
            "/v1/jobs/graph",
            json!({"jobs": [analyze("a", &["a"])]}),
            "jobs[0].depends_on: a job cannot depend on itself",
        ),
        (
            "/v1/jobs/graph",
            json!({"jobs": [analyze("a", &[]), analyze("b", &["nowhere"])]}),
            "jobs[1].depends_on[0]: no key of this graph and no stored job is `nowhere`",
        ),
        (
            "/v1/jobs/graph",
            json!({"jobs": [analyze("a", &[]), analyze("a", &[])]}),
            "jobs[1].key: `a` is the key of jobs[0] too",
        ),
        (
            "/v1/jobs/graph",
            json!({"jobs": [{"key": "t", "kind": "sentiment.aggregate", "payload": {}}]}),
            "jobs[0].depends_on: a sentiment.aggregate job",
        ),
        (
            "/v1/jobs/graph",
            json!({"jobs": [{"key": "t", "kind": "sentiment.analyze", "payload": {"texts": []}}]}),
            "jobs[0].payload.texts",
        ),
        (
            "/v1/jobs",
            json!({"kind": "sentiment.analyze", "payload": {"texts": ["t"]}, "depends_on": ["0190c0de-0000-7000-8000-000000000000"]}),
            "depends_on[0]: no job `0190c0de-0000-7000-8000-000000000000`",
        ),
        (
            "/v1/jobs",
            json!({"kind": "sentiment.aggregate", "payload": {}}),
            "depends_on: a sentiment.aggregate job",
        ),
    ];
    for (path, body, message) in cases {
        let (status, refused) = service.post_json(path, &body).await;
        assert_eq!(status, 422, "{body}: {refused}");
        let text = refused.to_string();
        assert!(text.contains(message), "{body}: {refused}");
    }
    let (status, parent) = service
        .post_json(
            "/v1/jobs",
            &json!({"kind": "sentiment.analyze", "payload": {"texts": ["p"]}}),
        )
        .await;
    assert_eq!(status, 202);
    let parent_id = parent["id"].as_str().expect("id");
    let (status, refused) = service
        .post_json(
            "/v1/jobs",
            &json!({"kind": "sentiment.analyze", "payload": {"texts": ["t"]}, "depends_on": [parent_id], "delay_ms": 10}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused.to_string().contains("give no run_at or delay_ms"),
        "{refused}"
    );
    let (status, batch) = service
        .post_json(
            "/v1/jobs/batch",
            &json!({"jobs": [{"kind": "sentiment.analyze", "payload": {"texts": ["t"]}, "depends_on": [parent_id]}]}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0]["status"], "invalid", "{batch}");
    assert!(batch.to_string().contains("POST /v1/jobs/graph"), "{batch}");

    let (_, listed) = service.get_json("/v1/jobs?limit=100").await;
    assert_eq!(
        listed["jobs"].as_array().map(Vec::len),
        Some(1),
        "only the parent was stored: {listed}"
    );
    service.service.shutdown().await.expect("stops");
}
