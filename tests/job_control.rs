//! Controlling and following jobs end to end over HTTP: cancelling jobs and pausing kinds on the
//! local queue (SQLite and PostgreSQL) and over RabbitMQ, with two nodes sharing the database
//! where a pause must hold on every node; per-kind defaults; an audit's progress as
//! Server-Sent Events. Needs `bulwark-providers` (the simulated answer engine, over loopback HTTP)
//! for a provider call that is still running when it is cancelled.

mod common;

use std::time::{Duration, Instant};

use bulwark_config::{Config, ProviderConfig, ProviderKind};
use bulwark_providers::simulated::{FaultKnobs, SimulatorParams, SimulatorServer};
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_test_support::eventually;
use common::broker::{amqp_config, delete_namespace, unique_namespace};
use common::{TestService, Transport};
use serde_json::{Value, json};

/// The simulated provider answers after this long: a job calling it is still running when it
/// is cancelled.
const SLOW_PROVIDER_MS: u64 = 10_000;
/// The control poll and the grace of these tests' nodes.
const CONTROL_INTERVAL_MS: u64 = 50;
const CANCEL_GRACE_MS: u64 = 300;

/// Sets the control settings of these tests and the provider `slow` at `base_url`.
fn control_settings(config: &mut Config, base_url: &str) {
    config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
    config.jobs.control_interval_ms = CONTROL_INTERVAL_MS;
    config.jobs.cancel_grace_ms = CANCEL_GRACE_MS;
    config.providers.insert(
        "slow".to_owned(),
        ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: Some(base_url.to_owned()),
            allow_plain_http: true,
            max_attempts: 1,
            attempt_timeout_ms: 2 * SLOW_PROVIDER_MS,
            call_deadline_ms: 2 * SLOW_PROVIDER_MS,
            ..ProviderConfig::default()
        },
    );
}

/// Boots a node of the transport; returns it and the broker namespace to delete afterwards.
async fn start(transport: Transport, provider_url: &str) -> (TestService, Option<String>) {
    let provider_url = provider_url.to_owned();
    let settings = move |config: &mut Config| control_settings(config, &provider_url);
    transport.start(settings).await
}

async fn slow_simulator() -> SimulatorServer {
    SimulatorServer::start(
        "127.0.0.1:0",
        SimulatorParams {
            faults: FaultKnobs {
                latency_ms: SLOW_PROVIDER_MS,
                ..FaultKnobs::default()
            },
            ..SimulatorParams::default()
        },
    )
    .await
    .expect("simulator listens")
}

/// Submits a job and returns its id.
async fn submit(service: &TestService, submission: &Value) -> String {
    let (status, job) = service.post_json("/v1/jobs", submission).await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().expect("job id").to_owned()
}

/// Waits until the job is in `status` and returns it.
async fn wait_for_status(service: &TestService, job_id: &str, status: &str) -> Value {
    let path = format!("/v1/jobs/{job_id}");
    eventually(Duration::from_secs(20), || async {
        let (_, job) = service.get_json(&path).await;
        (job["status"] == status).then_some(job)
    })
    .await
}

/// Runs the cancel scenarios on one transport.
async fn cancel_scenarios(transport: Transport) {
    let simulator = slow_simulator().await;
    let (service, namespace_opt) = start(transport, &simulator.base_url()).await;

    // Queued (delayed for a minute): cancelled at once, never runs.
    let delayed = submit(
        &service,
        &json!({"kind": "sentiment.analyze", "payload": {"texts": ["later"]}, "delay_ms": 60_000}),
    )
    .await;
    let (status, cancelled) = service
        .post_json(&format!("/v1/jobs/{delayed}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{transport:?}: {cancelled}");
    assert_eq!(
        cancelled["outcome"], "cancelled",
        "{transport:?}: {cancelled}"
    );
    assert_eq!(cancelled["job"]["status"], "cancelled");
    assert_eq!(cancelled["job"]["attempts"], 0, "never ran");
    assert_eq!(cancelled["job"]["error"]["code"], "CANCELLED");

    // Running, inside a provider call that answers in 10 s: stopped within the grace.
    let running = submit(
        &service,
        &json!({"kind": "provider.complete", "payload": {"provider": "slow", "prompt": "anything"}}),
    )
    .await;
    wait_for_status(&service, &running, "running").await;
    let asked = Instant::now();
    let (status, requested) = service
        .post_json(&format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{transport:?}: {requested}");
    assert_eq!(requested["outcome"], "cancel_requested", "{requested}");
    assert!(
        requested["job"]["cancel_requested_at"].is_string(),
        "{requested}"
    );
    let stopped = service.wait_for_job(&running).await;
    let took = asked.elapsed();
    assert_eq!(stopped["status"], "cancelled", "{transport:?}: {stopped}");
    assert_eq!(stopped["error"]["code"], "CANCELLED", "{stopped}");
    assert_eq!(
        stopped["attempts"], 1,
        "cancelled, never retried: {stopped}"
    );
    assert!(stopped["result"].is_null(), "{stopped}");
    // The poll, the grace and the write: far less than the call it cut short.
    assert!(
        took < Duration::from_millis(SLOW_PROVIDER_MS / 2),
        "{transport:?}: the cancel reached the provider call after {took:?}"
    );
    eprintln!("{transport:?}: cancel of a running provider call took {took:?}");

    let (status, again) = service
        .post_json(&format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["outcome"], "already_finished", "{again}");
    let (status, missing) = service
        .post_json(
            "/v1/jobs/0190c0de-0000-7000-8000-000000000000/cancel",
            &json!({}),
        )
        .await;
    assert_eq!(status, 404, "{missing}");

    service.service.shutdown().await.expect("node stops");
    simulator.stop().await;
    if let Some(namespace) = namespace_opt {
        delete_namespace(&namespace).await;
    }
}

/// Proves, on the local queue (SQLite and PostgreSQL) and over RabbitMQ: a queued job
/// cancelled ends `cancelled` at once and never runs; a running job cancelled in the middle of
/// a provider call that would answer in 10 s is stopped (the call dropped) within the control
/// poll and the grace, ends `cancelled` after one attempt and is not retried; cancelling it
/// again says it already finished; an unknown id is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_queued_and_running_jobs_on_every_transport() {
    for transport in Transport::ALL {
        tokio::time::timeout(Duration::from_secs(90), cancel_scenarios(transport))
            .await
            .unwrap_or_else(|_| panic!("{transport:?}: the scenarios did not finish in 90 s"));
    }
}

/// A second node on the first one's database, reached with the first one's admin key.
struct SecondNode {
    service: bulwark::Service,
    base_url: String,
}

/// Returns the statuses of `ids` as `node` answers them.
async fn statuses(node: &TestService, ids: &[String]) -> Vec<String> {
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let (_, job) = node.get_json(&format!("/v1/jobs/{id}")).await;
        found.push(job["status"].as_str().unwrap_or_default().to_owned());
    }
    found
}

/// Boots two nodes named `<name>-node-a` and `-b` on one new PostgreSQL database (and on
/// RabbitMQ when `amqp`, in a namespace of their own) after `adjust` changed their config;
/// returns them and the namespace.
async fn two_nodes(
    name: &str,
    amqp: bool,
    adjust: impl Fn(&mut Config),
) -> (TestService, SecondNode, String) {
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let namespace = unique_namespace();
    let config_of = |node_id: String| {
        let mut config = common::test_config(&database.url);
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
        config.jobs.control_interval_ms = CONTROL_INTERVAL_MS;
        config.jobs.node_id = Some(node_id);
        if amqp {
            amqp_config(&namespace)(&mut config);
        }
        adjust(&mut config);
        config
    };
    let first = bulwark::Service::start(&config_of(format!("{name}-node-a")))
        .await
        .expect("first node starts");
    let second = bulwark::Service::start(&config_of(format!("{name}-node-b")))
        .await
        .expect("second node starts");
    let second = SecondNode {
        base_url: format!("http://{}", second.addr),
        service: second,
    };
    let first = TestService::around(first, database).await;
    (first, second, namespace)
}

/// Runs the pause scenario with two nodes on PostgreSQL (and RabbitMQ when `amqp`).
async fn pause_scenario(amqp: bool) {
    let (first, second, namespace) = two_nodes("pause", amqp, |_| {}).await;
    let health_of = |base_url: String| {
        let client = first.client.clone();
        async move {
            let response = client
                .get(format!("{base_url}/health"))
                .send()
                .await
                .expect("health answers");
            response.json::<Value>().await.expect("health json")
        }
    };

    let (status, paused) = first
        .post_json("/v1/kinds/sentiment.analyze/pause", &json!({}))
        .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["changed"], true);
    // Every node enforces the pause once its control actor read it.
    for base_url in [first.base_url.clone(), second.base_url.clone()] {
        eventually(Duration::from_secs(10), || async {
            let health = health_of(base_url.clone()).await;
            (health["paused_kinds"] == json!(["sentiment.analyze"])).then_some(())
        })
        .await;
    }
    let (_, listed) = first.get_json("/v1/kinds/paused").await;
    assert_eq!(listed["paused"][0]["kind"], "sentiment.analyze", "{listed}");
    assert_eq!(listed["paused"][0]["paused_by"], "key:tests", "{listed}");

    let mut ids = Vec::new();
    for index in 0..20 {
        let base_url = if index % 2 == 0 {
            first.base_url.clone()
        } else {
            second.base_url.clone()
        };
        let response = first
            .client
            .post(format!("{base_url}/v1/jobs"))
            .json(&json!({"kind": "sentiment.analyze", "payload": {"texts": [format!("text {index}")]}}))
            .send()
            .await
            .expect("submitted");
        assert_eq!(response.status().as_u16(), 202);
        let job: Value = response.json().await.expect("job json");
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    // While paused no job runs, on either node, whatever carries it. The evidence that the
    // nodes did look at them: over RabbitMQ every delivery was parked; on the local queue a
    // job of another kind, due after them, was claimed and run past them.
    if amqp {
        let store = first.database.open().await;
        eventually(Duration::from_secs(20), || async {
            let mut num_parked = 0;
            for id in &ids {
                let job = store
                    .get_job(id)
                    .await
                    .expect("job read")
                    .expect("job stored");
                num_parked += usize::from(job.parked_at_ms.is_some());
            }
            (num_parked == ids.len()).then_some(())
        })
        .await;
        store.close().await;
    } else {
        let (status, witness) = first
            .post_json(
                "/v1/jobs",
                &json!({"kind": "provider.complete", "payload": {"provider": "none", "prompt": "x"}}),
            )
            .await;
        assert_eq!(status, 202, "{witness}");
        let witness = first
            .wait_for_job(witness["id"].as_str().expect("witness id"))
            .await;
        assert_eq!(witness["status"], "failed", "the witness ran: {witness}");
    }
    let found = statuses(&first, &ids).await;
    assert!(
        found.iter().all(|status| status == "queued"),
        "amqp={amqp}: a job of a paused kind left the queue: {found:?}"
    );

    let response = first
        .client
        .post(format!(
            "{}/v1/kinds/sentiment.analyze/resume",
            second.base_url
        ))
        .send()
        .await
        .expect("resumed");
    assert_eq!(response.status().as_u16(), 200);
    for id in &ids {
        let job = first.wait_for_job(id).await;
        assert_eq!(job["status"], "succeeded", "amqp={amqp}: {job}");
        assert_eq!(job["attempts"], 1, "ran once: {job}");
    }
    // Each node drops the kind from its view once its control actor read the resume; the
    // jobs may all have run on the other node before that.
    for base_url in [first.base_url.clone(), second.base_url.clone()] {
        eventually(Duration::from_secs(10), || async {
            let health = health_of(base_url.clone()).await;
            (health["paused_kinds"] == json!([])).then_some(())
        })
        .await;
    }

    second.service.shutdown().await.expect("second node stops");
    first.service.shutdown().await.expect("first node stops");
    if amqp {
        delete_namespace(&namespace).await;
    }
}

/// Proves a pause holds on every node, whatever carries the jobs: with two nodes on one
/// PostgreSQL database (local queue), then two nodes on RabbitMQ, jobs of a paused kind
/// submitted to either node stay queued while it is paused (over RabbitMQ every delivery is
/// parked in the outbox; on the local queue a later job of another kind runs past them), `/health` of both nodes lists the kind, and after a resume through
/// the other node every job runs, once; none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_kind_waits_on_every_node_and_runs_after_resume() {
    for amqp in [false, true] {
        tokio::time::timeout(Duration::from_secs(90), pause_scenario(amqp))
            .await
            .unwrap_or_else(|_| panic!("amqp={amqp}: the scenario did not finish in 90 s"));
    }
}

/// Runs the limit scenario with two nodes on PostgreSQL (and RabbitMQ when `amqp`): ten
/// audits of a kind limited to three running cluster-wide and two per node. Two nodes could
/// run four at once under the per-node limit alone, so the cluster-wide one is what holds them
/// to three; and one node can never take every slot, so both must run audits side by side (a
/// node that frees a slot claims again at once, so a cluster-wide limit alone lets one node
/// keep both slots for the whole run).
async fn limit_scenario(amqp: bool) {
    let simulator = SimulatorServer::start(
        "127.0.0.1:0",
        SimulatorParams {
            faults: FaultKnobs {
                latency_ms: 400,
                ..FaultKnobs::default()
            },
            ..SimulatorParams::default()
        },
    )
    .await
    .expect("simulator listens");
    let provider_url = simulator.base_url();
    let (first, second, namespace) = two_nodes("limit", amqp, |config| {
        control_settings(config, &provider_url);
        config.jobs.kinds.insert(
            "audit.run".to_owned(),
            bulwark_config::KindConfig {
                max_running: Some(3),
                max_running_per_node: Some(2),
                ..bulwark_config::KindConfig::default()
            },
        );
    })
    .await;
    let mut ids = Vec::new();
    for index in 0..10 {
        let base_url = [&first.base_url, &second.base_url][index % 2];
        let response = first
            .client
            .post(format!("{base_url}/v1/audits"))
            .json(&json!({"brand": "Acme", "prompts": [format!("Which crm is best? {index}")], "providers": ["slow"], "samples_per_prompt": 2}))
            .send()
            .await
            .expect("submitted");
        assert_eq!(response.status().as_u16(), 202);
        let audit: Value = response.json().await.expect("audit json");
        ids.push(audit["id"].as_str().expect("audit id").to_owned());
    }
    // Samples the running audits (as the store counts them) until every audit finished.
    let store = first.database.open().await;
    let mut max_running = 0;
    let mut samples = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = store
            .count_live_jobs(bulwark_core::now_ms())
            .await
            .expect("counted");
        let running: i64 = counts
            .iter()
            .filter(|count| count.kind == "audit.run" && count.status == "running")
            .map(|count| count.count)
            .sum();
        let live: i64 = counts
            .iter()
            .filter(|count| count.kind == "audit.run")
            .map(|count| count.count)
            .sum();
        max_running = max_running.max(running);
        samples += 1;
        if live == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "amqp={amqp}: audits still live after 60 s: {counts:?}"
        );
        tokio::task::yield_now().await;
    }
    store.close().await;
    assert!(
        max_running <= 3,
        "amqp={amqp}: {max_running} audits ran at once, the cluster-wide limit is 3"
    );
    assert_eq!(
        max_running, 3,
        "amqp={amqp}: three ran side by side, on both nodes"
    );
    assert!(samples > 10, "amqp={amqp}: sampled {samples} times");
    let mut nodes_used = std::collections::BTreeSet::new();
    for id in &ids {
        let (_, job) = first.get_json(&format!("/v1/jobs/{id}")).await;
        assert_eq!(job["status"], "succeeded", "amqp={amqp}: {job}");
        assert_eq!(job["attempts"], 1, "amqp={amqp}: ran once: {job}");
        let (_, attempts) = first.get_json(&format!("/v1/jobs/{id}/attempts")).await;
        if let Some(node) = attempts["attempts"][0]["node"].as_str() {
            nodes_used.insert(node.to_owned());
        }
    }
    assert_eq!(
        nodes_used.len(),
        2,
        "amqp={amqp}: both nodes ran audits: {nodes_used:?}"
    );
    second.service.shutdown().await.expect("second node stops");
    first.service.shutdown().await.expect("first node stops");
    if amqp {
        delete_namespace(&namespace).await;
    }
}

/// Proves a cluster-wide limit holds with two nodes, whatever carries the jobs: `audit.run`
/// limited to 3 running cluster-wide and 2 per node, 10 audits submitted to both nodes, on
/// one PostgreSQL database (local queue), then over RabbitMQ. Sampled from the store as fast
/// as it answers until every audit finished, never more than 3 run at once (and 3 do run side
/// by side, which takes both nodes); every audit succeeds after one attempt, and both nodes
/// ran some.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kind_limit_holds_across_two_nodes() {
    for amqp in [false, true] {
        tokio::time::timeout(Duration::from_secs(90), limit_scenario(amqp))
            .await
            .unwrap_or_else(|_| panic!("amqp={amqp}: the scenario did not finish in 90 s"));
    }
}

/// Proves bad control requests get a 422 naming the field and change nothing: an unknown
/// kind to pause, a bulk cancel that names no kind (`*` is every kind); and that a bulk cancel's dry run counts
/// what the cancel then does.
#[tokio::test]
async fn control_requests_are_validated_and_bulk_cancel_counts() {
    let service = TestService::start_with(TestBackend::Sqlite, |config| {
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
    })
    .await;
    let (status, refused) = service
        .post_json("/v1/kinds/video.render/pause", &json!({}))
        .await;
    assert_eq!(status, 422, "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("path:") && message.contains("JobKindName"),
        "{refused}"
    );
    let (_, listed) = service.get_json("/v1/kinds/paused").await;
    assert_eq!(listed["paused"], json!([]), "nothing paused");
    for unnamed in [
        json!({}),
        json!({"status": "queued"}),
        json!({"kind": "video.render"}),
    ] {
        let (status, refused) = service.post_json("/v1/jobs/cancel", &unnamed).await;
        assert_eq!(status, 422, "{unnamed}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap_or_default()
                .contains("kind"),
            "{refused}"
        );
    }

    for delay_ms in [60_000, 60_000, 60_000] {
        submit(
            &service,
            &json!({"kind": "sentiment.analyze", "payload": {"texts": ["x"]}, "delay_ms": delay_ms}),
        )
        .await;
    }
    let filter = json!({"kind": "sentiment.analyze", "status": "queued", "dry_run": true});
    let (status, dry) = service.post_json("/v1/jobs/cancel", &filter).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["num_cancelled"], 3, "{dry}");
    assert_eq!(dry["dry_run"], true);
    let (_, still) = service.get_json("/v1/jobs?status=queued").await;
    assert_eq!(
        still["jobs"].as_array().map(Vec::len),
        Some(3),
        "a dry run changes nothing"
    );
    let filter = json!({"kind": "sentiment.analyze", "status": "queued"});
    let (status, done) = service.post_json("/v1/jobs/cancel", &filter).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["num_cancelled"], 3, "{done}");
    let (_, cancelled) = service.get_json("/v1/jobs?status=cancelled").await;
    assert_eq!(cancelled["jobs"].as_array().map(Vec::len), Some(3));
    service.service.shutdown().await.expect("node stops");
}

/// Proves a kind's defaults (`[jobs.kinds.<kind>]`) are what its jobs get when their
/// submission does not say, one by one and in a batch, and that a submission that says wins;
/// other kinds keep the node's defaults.
#[tokio::test]
async fn kind_defaults_apply_when_a_submission_does_not_say() {
    let service = TestService::start_with(TestBackend::Sqlite, |config| {
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
        config.jobs.max_attempts = 4;
        config.jobs.kinds.insert(
            "sentiment.analyze".to_owned(),
            bulwark_config::KindConfig {
                priority: Some(8),
                timeout_ms: Some(5_000),
                max_attempts: Some(2),
                ..bulwark_config::KindConfig::default()
            },
        );
    })
    .await;
    let later = |extra: Value| {
        let mut body =
            json!({"kind": "sentiment.analyze", "payload": {"texts": ["x"]}, "delay_ms": 60_000});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let (status, defaulted) = service.post_json("/v1/jobs", &later(json!({}))).await;
    assert_eq!(status, 202, "{defaulted}");
    assert_eq!(defaulted["priority"], 8, "{defaulted}");
    assert_eq!(defaulted["timeout_ms"], 5_000, "{defaulted}");
    assert_eq!(defaulted["max_attempts"], 2, "{defaulted}");
    let (_, explicit) = service
        .post_json(
            "/v1/jobs",
            &later(json!({"priority": 1, "timeout_ms": 100})),
        )
        .await;
    assert_eq!(explicit["priority"], 1, "{explicit}");
    assert_eq!(explicit["timeout_ms"], 100, "{explicit}");
    let (status, batch) = service
        .post_json("/v1/jobs/batch", &json!({"jobs": [later(json!({}))]}))
        .await;
    assert_eq!(status, 200, "{batch}");
    let batch_id = batch["results"][0]["job_id"].as_str().expect("created");
    let (_, batched) = service.get_json(&format!("/v1/jobs/{batch_id}")).await;
    assert_eq!(batched["priority"], 8, "{batched}");
    assert_eq!(batched["max_attempts"], 2, "{batched}");
    let (_, other) = service
        .post_json(
            "/v1/jobs",
            &json!({"kind": "provider.complete", "payload": {"provider": "none", "prompt": "x"}, "delay_ms": 60_000}),
        )
        .await;
    assert_eq!(other["priority"], 5, "{other}");
    assert_eq!(other["max_attempts"], 4, "{other}");
    assert!(other["timeout_ms"].is_null(), "{other}");
    service.service.shutdown().await.expect("node stops");
}

/// Reads a Server-Sent Events body to its end and returns each event's type and data.
async fn read_events(response: reqwest::Response) -> Vec<(String, Value)> {
    let body = response.text().await.expect("the stream ends");
    let mut events = Vec::new();
    for block in body.split("\n\n") {
        let mut event_type = "message".to_owned();
        let mut data_opt = None;
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                event_type = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data_opt = Some(serde_json::from_str::<Value>(value.trim()).expect("json data"));
            }
        }
        if let Some(data) = data_opt {
            events.push((event_type, data));
        }
    }
    events
}

/// Proves a running audit reports its progress (items done of its total) and that
/// `GET /v1/jobs/{id}/events` streams it as Server-Sent Events: the job's state first, then
/// progress events counting up while it runs, then its final status, after which the stream
/// ends; the job shows its last progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_delivers_an_audits_progress() {
    let simulator = SimulatorServer::start(
        "127.0.0.1:0",
        SimulatorParams {
            faults: FaultKnobs {
                latency_ms: 300,
                ..FaultKnobs::default()
            },
            ..SimulatorParams::default()
        },
    )
    .await
    .expect("simulator listens");
    let provider_url = simulator.base_url();
    let service = TestService::start_with(TestBackend::Sqlite, move |config| {
        control_settings(config, &provider_url);
        config.audits.concurrency = 1;
    })
    .await;
    let (status, audit) = service
        .post_json(
            "/v1/audits",
            &json!({"brand": "Acme", "prompts": ["Which crm is best?"], "providers": ["slow"], "samples_per_prompt": 6}),
        )
        .await;
    assert_eq!(status, 202, "{audit}");
    let job_id = audit["id"].as_str().expect("audit id").to_owned();
    let response = service
        .client
        .get(service.url(&format!("/v1/jobs/{job_id}/events")))
        .send()
        .await
        .expect("stream opens");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let events = tokio::time::timeout(Duration::from_secs(60), read_events(response))
        .await
        .expect("the stream ends when the audit does");

    let (first_type, first) = &events[0];
    assert_eq!(first_type, "status", "{events:?}");
    assert_eq!(first["job_id"], job_id.as_str());
    let done_counts: Vec<u64> = events
        .iter()
        .filter(|(event_type, _)| event_type == "progress")
        .filter_map(|(_, change)| change["progress"]["done"].as_u64())
        .collect();
    assert!(done_counts.len() >= 2, "progress while it ran: {events:?}");
    assert!(
        done_counts.windows(2).all(|pair| pair[0] < pair[1]),
        "counting up: {done_counts:?}"
    );
    let (last_type, last) = events.last().expect("events");
    assert_eq!(last_type, "status", "{events:?}");
    assert_eq!(last["status"], "succeeded", "{events:?}");
    let (_, job) = service.get_json(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job["progress"]["done"], 6, "{job}");
    assert_eq!(job["progress"]["total"], 6, "{job}");
    let (status, _) = service
        .get_json("/v1/jobs/0190c0de-0000-7000-8000-000000000000/events")
        .await;
    assert_eq!(status, 404);
    service.service.shutdown().await.expect("node stops");
    simulator.stop().await;
}
