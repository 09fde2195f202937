//! Jobs over the real RabbitMQ at 127.0.0.1:5672 (`BULWARK_TEST_AMQP_URL` overrides): each test
//! uses its own namespace and deletes what it declared. Tests that disrupt the broker take the
//! write side of [`BROKER`], the others the read side, so a disruption never hits another
//! test; a guard starts the broker app again even when a test fails.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_test_support::{eventually, wait_for_child};
use common::TestService;
use common::broker::{
    amqp_config, amqp_url, delete_namespace, test_channel, topology_of, unique_namespace,
};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::{Value, json};
use tokio::sync::RwLock;

static BROKER: RwLock<()> = RwLock::const_new(());

const KIND: &str = "sentiment.analyze";

/// A message to publish from the test, as any producer would.
struct TestMessage {
    body: Vec<u8>,
    content_type: &'static str,
    message_id: String,
    reply_to: Option<String>,
    correlation_id: Option<String>,
    request_id: Option<String>,
}

fn envelope(id: &str, payload: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"v": 1, "id": id, "kind": KIND, "payload": payload}))
        .expect("envelope encodes")
}

async fn publish(channel: &Channel, namespace: &str, message: &TestMessage) {
    let mut headers = FieldTable::default();
    if let Some(request_id) = &message.request_id {
        headers.insert(
            "x-request-id".into(),
            AMQPValue::LongString(request_id.as_str().into()),
        );
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        );
    }
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(message.content_type.into())
        .with_message_id(message.message_id.as_str().into())
        .with_headers(headers);
    if let Some(reply_to) = &message.reply_to {
        properties = properties.with_reply_to(reply_to.as_str().into());
    }
    if let Some(correlation_id) = &message.correlation_id {
        properties = properties.with_correlation_id(correlation_id.as_str().into());
    }
    let exchange = format!("{namespace}.jobs");
    let confirm = channel
        .basic_publish(
            exchange.as_str().into(),
            KIND.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &message.body,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert_eq!(
        confirm,
        lapin::Confirmation::Ack(None),
        "message routed and confirmed"
    );
}

fn plain(id: &str, payload: &Value) -> TestMessage {
    TestMessage {
        body: envelope(id, payload),
        content_type: "application/json",
        message_id: id.to_owned(),
        reply_to: None,
        correlation_id: None,
        request_id: None,
    }
}

/// Waits for one message on `queue` and returns its properties and body.
async fn get_one(channel: &Channel, queue: &str) -> (BasicProperties, Vec<u8>) {
    eventually(Duration::from_secs(30), || async {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        got.map(|message| {
            let delivery = message.delivery;
            (delivery.properties, delivery.data)
        })
    })
    .await
}

/// Returns all jobs the node stores (up to 500).
async fn all_jobs(service: &TestService) -> Vec<Value> {
    let (status, page) = service.get_json("/v1/jobs?limit=500").await;
    assert_eq!(status, 200, "{page}");
    page["jobs"].as_array().cloned().unwrap_or_default()
}

/// Waits until `expected` jobs exist and all succeeded; asserts one row per key.
async fn wait_all_succeeded(service: &TestService, expected: usize) -> Vec<Value> {
    let jobs = eventually(Duration::from_secs(120), || async {
        let jobs = all_jobs(service).await;
        let num_succeeded = jobs
            .iter()
            .filter(|job| job["status"] == "succeeded")
            .count();
        (jobs.len() >= expected && num_succeeded == jobs.len()).then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), expected, "one row per published job");
    jobs
}

/// Runs `rabbitmqctl`, failing the test if it fails.
fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts the broker app again when dropped, so a failing test never leaves it stopped.
struct StartAppGuard;

impl Drop for StartAppGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
        let _ = Command::new("rabbitmqctl")
            .args(["await_startup", "--timeout", "60"])
            .output();
    }
}

/// Proves jobs submitted over HTTP travel over the broker and run, and that a producer's own
/// message creates its job (message id = idempotency key) and gets its outcome on `reply_to`
/// with its `correlation_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_travel_over_the_broker_and_replies_carry_the_correlation_id() {
    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let mut job_ids = Vec::new();
    for index in 0..5 {
        let (status, job) = service
            .post_json(
                "/v1/jobs",
                &json!({"kind": KIND, "payload": {"texts": [format!("good day {index}")]}}),
            )
            .await;
        assert_eq!(status, 202, "{job}");
        job_ids.push(job["id"].as_str().expect("id").to_owned());
    }
    for job_id in &job_ids {
        let job = service.wait_for_job(job_id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }

    let (connection, channel) = test_channel().await;
    let reply_queue = topology_of(&namespace)
        .declare_reply_queue(&channel)
        .await
        .expect("reply queue");
    let message_id = format!("producer-{}", uuid::Uuid::now_v7());
    let mut message = plain(&message_id, &json!({"texts": ["what a lovely day"]}));
    message.reply_to = Some(reply_queue.clone());
    message.correlation_id = Some("corr-42".to_owned());
    publish(&channel, &namespace, &message).await;
    let (properties, body) = get_one(&channel, &reply_queue).await;
    assert_eq!(
        properties.correlation_id().as_ref().map(|id| id.as_str()),
        Some("corr-42")
    );
    let event: Value = serde_json::from_slice(&body).expect("event is json");
    assert_eq!(event["status"], "succeeded", "{event}");
    assert_eq!(event["idempotency_key"], message_id.as_str(), "{event}");
    assert!(event["result"]["results"].is_array(), "{event}");
    let jobs = all_jobs(&service).await;
    assert_eq!(jobs.len(), 6, "five API jobs and one producer job");

    let _ = connection.close(200, "done".into()).await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Proves a redelivered message whose job already succeeded is not run again: its stored
/// result is published again (same job, same attempts).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_succeeded_job_is_not_run_again() {
    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let (connection, channel) = test_channel().await;
    let reply_queue = topology_of(&namespace)
        .declare_reply_queue(&channel)
        .await
        .expect("reply queue");
    let message_id = format!("dup-{}", uuid::Uuid::now_v7());
    let mut message = plain(&message_id, &json!({"texts": ["fine", "awful"]}));
    message.reply_to = Some(reply_queue.clone());
    publish(&channel, &namespace, &message).await;
    let (_, first_body) = get_one(&channel, &reply_queue).await;
    let first: Value = serde_json::from_slice(&first_body).expect("json");
    assert_eq!(first["status"], "succeeded", "{first}");

    publish(&channel, &namespace, &message).await;
    let (_, second_body) = get_one(&channel, &reply_queue).await;
    let second: Value = serde_json::from_slice(&second_body).expect("json");
    assert_eq!(second["job_id"], first["job_id"], "the same job answers");
    assert_eq!(
        second["result"], first["result"],
        "the stored result is re-published"
    );
    assert_eq!(second["attempts"], 1, "the job ran once: {second}");
    let jobs = all_jobs(&service).await;
    assert_eq!(jobs.len(), 1, "one row for the message id");
    assert_eq!(jobs[0]["attempts"], 1);

    let _ = connection.close(200, "done".into()).await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Returns the node's dead letters of `kind` (up to 100), newest first.
async fn dead_letters_of(service: &TestService, kind: &str) -> Vec<Value> {
    let (status, page) = service
        .get_json(&format!("/v1/dead-letters?kind={kind}&limit=100"))
        .await;
    assert_eq!(status, 200, "{page}");
    page["dead_letters"].as_array().cloned().unwrap_or_default()
}

/// Waits for the dead letter of message `message_id` and returns it.
async fn wait_dead_letter(service: &TestService, message_id: &str) -> Value {
    eventually(Duration::from_secs(60), || async {
        dead_letters_of(service, KIND)
            .await
            .into_iter()
            .find(|letter| letter["headers"]["message_id"] == message_id)
    })
    .await
}

/// Proves malformed and invalid messages are dead-lettered at once, with the reason in the
/// `x-bulwark-reject-reason` header, create no job, and are stored by the node's dead-letter
/// consumer as parked letters (a retry cannot fix them) carrying the reason and the message
/// as it was received; the dead-letter queue is left empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_invalid_messages_are_dead_lettered_with_a_reason() {
    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let (connection, channel) = test_channel().await;
    let dead_letter_queue = format!("{namespace}.dlq.{KIND}");

    let mut malformed = plain("bad-1", &json!({}));
    malformed.body = b"this is not json".to_vec();
    publish(&channel, &namespace, &malformed).await;
    let letter = wait_dead_letter(&service, "bad-1").await;
    assert_eq!(letter["message"], "this is not json", "{letter}");
    assert_eq!(letter["source"], "broker", "{letter}");
    assert_eq!(letter["queue"], format!("{namespace}.{KIND}"), "{letter}");
    assert_eq!(letter["error_code"], "INVALID_MESSAGE", "{letter}");
    assert_eq!(letter["retriable"], false, "{letter}");
    assert_eq!(letter["status"], "parked", "{letter}");
    let reason = letter["headers"]["headers"]["x-bulwark-reject-reason"]
        .as_str()
        .expect("reason header kept");
    assert!(reason.contains("malformed json"), "{reason}");
    assert_eq!(letter["error_message"], reason, "{letter}");

    publish(&channel, &namespace, &plain("bad-2", &json!({"texts": []}))).await;
    let letter = wait_dead_letter(&service, "bad-2").await;
    let reason = letter["error_message"].as_str().expect("error message");
    assert!(reason.starts_with("payload.texts"), "{reason}");
    assert_eq!(
        letter["message"]["payload"],
        json!({"texts": []}),
        "{letter}"
    );

    assert!(
        all_jobs(&service).await.is_empty(),
        "no job for refused messages"
    );
    eventually(Duration::from_secs(30), || async {
        (ready_count(&channel, &dead_letter_queue).await == 0).then_some(())
    })
    .await;
    let _ = connection.close(200, "done".into()).await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Proves the way back from the broker's dead-letter queue. While the jobs table is out of
/// service (the fault), a message cannot become a job: each delivery is returned to its queue
/// until RabbitMQ dead-letters it at `x-delivery-limit`. The node stores it from
/// `<ns>.dlq.<kind>` with its `x-death`, request id and trace id, and acks it. Once the fault
/// is fixed an operator requeues it: it goes back to its original queue with its message id,
/// its job runs once and succeeds, and the letter is marked recovered. A bulk requeue sends a
/// malformed message back too, which is refused again and comes back to its letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_lettered_message_is_stored_requeued_and_succeeds_after_the_fault_is_fixed() {
    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let base = amqp_config(&namespace);
    let service = TestService::start_with(TestBackend::Postgres, move |config| {
        base(config);
        config.amqp.delivery_limit = 2;
        config.dead_letters.max_retries = 0;
        config.dead_letters.scan_interval_ms = 200;
        config.dead_letters.recovery_interval_ms = 200;
    })
    .await;
    let (connection, channel) = test_channel().await;
    let suffix = uuid::Uuid::now_v7().simple().to_string();

    service
        .database
        .execute("ALTER TABLE jobs RENAME TO jobs_out_of_service")
        .await;
    let stuck_id = format!("stuck-{suffix}");
    let mut stuck = plain(&stuck_id, &json!({"texts": ["a fine day for a rescue"]}));
    stuck.request_id = Some(format!("req-{suffix}"));
    publish(&channel, &namespace, &stuck).await;
    let bad_id = format!("bad-{suffix}");
    let mut bad = plain(&bad_id, &json!({}));
    bad.body = b"not an envelope".to_vec();
    publish(&channel, &namespace, &bad).await;

    let letter = wait_dead_letter(&service, &stuck_id).await;
    assert_eq!(letter["source"], "broker", "{letter}");
    assert_eq!(letter["queue"], format!("{namespace}.{KIND}"), "{letter}");
    assert_eq!(letter["job_id"], stuck_id.as_str(), "{letter}");
    assert_eq!(letter["error_code"], "DELIVERY_LIMIT", "{letter}");
    assert_eq!(letter["retriable"], true, "{letter}");
    assert_eq!(letter["status"], "parked", "no automatic retries: {letter}");
    assert_eq!(letter["request_id"], format!("req-{suffix}"), "{letter}");
    assert_eq!(
        letter["trace_id"], "0af7651916cd43dd8448eb211c80319c",
        "{letter}"
    );
    assert_eq!(
        letter["message"]["payload"],
        json!({"texts": ["a fine day for a rescue"]}),
        "the message as it was received: {letter}"
    );
    let death = &letter["headers"]["headers"]["x-death"][0];
    assert_eq!(death["reason"], "delivery_limit", "{letter}");
    assert_eq!(death["queue"], format!("{namespace}.{KIND}"), "{letter}");
    let dead_letter_queue = format!("{namespace}.dlq.{KIND}");
    eventually(Duration::from_secs(30), || async {
        (ready_count(&channel, &dead_letter_queue).await == 0).then_some(())
    })
    .await;
    wait_dead_letter(&service, &bad_id).await;
    let depth_line = format!("bulwark_dead_letters{{queue=\"{namespace}.{KIND}\"}} 2");
    eventually(Duration::from_secs(30), || async {
        let metrics = service.get_text("/metrics").await;
        metrics.lines().any(|line| line == depth_line).then_some(())
    })
    .await;

    // The fault is fixed; the operator requeues the message.
    service
        .database
        .execute("ALTER TABLE jobs_out_of_service RENAME TO jobs")
        .await;
    let letter_id = letter["id"].as_str().expect("letter id");
    let (status, requeued) = service
        .post_json(&format!("/v1/dead-letters/{letter_id}/requeue"), &json!({}))
        .await;
    assert_eq!(status, 200, "{requeued}");
    assert_eq!(requeued["status"], "requeued", "{requeued}");
    let jobs = wait_all_succeeded(&service, 1).await;
    assert_eq!(jobs[0]["idempotency_key"], stuck_id.as_str(), "{jobs:?}");
    assert_eq!(jobs[0]["attempts"], 1, "ran once: {jobs:?}");
    eventually(Duration::from_secs(30), || async {
        let (_, letter) = service
            .get_json(&format!("/v1/dead-letters/{letter_id}"))
            .await;
        (letter["status"] == "recovered").then_some(())
    })
    .await;

    // Bulk requeue by error code: the malformed message goes back and is refused again.
    let bad_letter = wait_dead_letter(&service, &bad_id).await;
    let (status, bulk) = service
        .post_json(
            "/v1/dead-letters/requeue",
            &json!({"error_code": "INVALID_MESSAGE"}),
        )
        .await;
    assert_eq!(status, 200, "{bulk}");
    assert_eq!(bulk["num_changed"], 1, "{bulk}");
    let again = eventually(Duration::from_secs(60), || async {
        let (_, letter) = service
            .get_json(&format!(
                "/v1/dead-letters/{}",
                bad_letter["id"].as_str().unwrap_or("")
            ))
            .await;
        (letter["status"] == "parked" && letter["dead_at"] != bad_letter["dead_at"])
            .then_some(letter)
    })
    .await;
    assert_eq!(again["error_code"], "INVALID_MESSAGE", "{again}");
    assert_eq!(again["message"], "not an envelope", "{again}");
    assert_eq!(
        dead_letters_of(&service, KIND).await.len(),
        2,
        "still one letter per message"
    );
    assert_eq!(
        all_jobs(&service).await.len(),
        1,
        "no job for the refused one"
    );

    let _ = connection.close(200, "done".into()).await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Publishes `count` 32-text jobs and returns their message ids.
async fn publish_batch(channel: &Channel, namespace: &str, prefix: &str, count: usize) {
    let texts: Vec<String> = (0..32)
        .map(|index| format!("the service was great and the food was fine {index}"))
        .collect();
    for index in 0..count {
        publish(
            channel,
            namespace,
            &plain(&format!("{prefix}-{index}"), &json!({ "texts": texts })),
        )
        .await;
    }
}

/// Waits until some but not all of `total` jobs succeeded, so a disruption lands mid-stream.
async fn wait_mid_stream(service: &TestService, total: usize) {
    let num_succeeded = eventually(Duration::from_secs(60), || async {
        let jobs = all_jobs(service).await;
        let num_succeeded = jobs
            .iter()
            .filter(|job| job["status"] == "succeeded")
            .count();
        (num_succeeded > 0).then_some(num_succeeded)
    })
    .await;
    assert!(
        num_succeeded < total,
        "all {total} jobs finished before the disruption, the test proves nothing"
    );
}

/// Proves that closing every broker connection mid-stream loses nothing and runs nothing
/// twice in effect: the consumers fail, restart with backoff, unacked deliveries come back,
/// and every message ends as exactly one succeeded job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_all_connections_mid_stream_loses_nothing() {
    let _exclusive = BROKER.write().await;
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let (connection, channel) = test_channel().await;
    let total = 60;
    publish_batch(&channel, &namespace, "close", total).await;
    let _ = connection.close(200, "published".into()).await;
    wait_mid_stream(&service, total).await;
    rabbitmqctl(&["close_all_connections", "bulwark test disruption"]);
    let jobs = wait_all_succeeded(&service, total).await;
    let mut keys: Vec<&str> = jobs
        .iter()
        .filter_map(|job| job["idempotency_key"].as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), total, "every message id has exactly one job");
    eventually(Duration::from_secs(30), || async {
        let (status, _) = service.get_json("/ready").await;
        (status == 200).then_some(())
    })
    .await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Proves that stopping the broker app mid-stream loses nothing: `/ready` stays ready and names
/// the broker degraded while it is stopped (the outbox absorbs submissions), a job submitted
/// meanwhile waits in the outbox, and after the app starts again every job (published before
/// and submitted during the outage) succeeds once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_the_broker_mid_stream_loses_nothing() {
    let _exclusive = BROKER.write().await;
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let (connection, channel) = test_channel().await;
    let total = 60;
    publish_batch(&channel, &namespace, "stop", total).await;
    let _ = connection.close(200, "published".into()).await;
    wait_mid_stream(&service, total).await;
    let guard = StartAppGuard;
    rabbitmqctl(&["stop_app"]);
    let readiness = eventually(Duration::from_secs(30), || async {
        let (status, body) = service.get_json("/ready").await;
        let broker_degraded = body["degraded"].as_array().is_some_and(|degraded| {
            degraded
                .iter()
                .any(|component| component["name"] == "broker")
        });
        broker_degraded.then_some((status, body))
    })
    .await;
    assert_eq!(
        readiness.0, 200,
        "a broker outage leaves the node ready: {}",
        readiness.1
    );
    assert_eq!(readiness.1["status"], "ready", "{}", readiness.1);
    let (status, during_outage) = service
        .post_json(
            "/v1/jobs",
            &json!({"kind": KIND, "payload": {"texts": ["sent while the broker was down"]}}),
        )
        .await;
    assert_eq!(
        status, 202,
        "the job is stored in the outbox: {during_outage}"
    );
    drop(guard);
    let jobs = wait_all_succeeded(&service, total + 1).await;
    assert!(
        jobs.iter().any(|job| job["id"] == during_outage["id"]),
        "the outbox job ran"
    );
    eventually(Duration::from_secs(30), || async {
        let (status, _) = service.get_json("/ready").await;
        (status == 200).then_some(())
    })
    .await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// A `bulwark serve` child process whose log lines are collected.
struct Node {
    child: std::process::Child,
    base_url: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(config_file: &std::path::Path) -> Node {
    let served = common::serve(
        Command::new(env!("CARGO_BIN_EXE_bulwark"))
            .arg("--config")
            .arg(config_file)
            .arg("serve")
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL"),
    );
    Node {
        child: served.child,
        base_url: served.base_url,
        logs: served.logs,
    }
}

/// Proves two `bulwark serve` processes sharing one PostgreSQL schema and one broker namespace
/// share the jobs, each done once, and that a message's `x-request-id` and `traceparent`
/// appear in the logs of its processing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_the_queue_and_each_job_runs_once() {
    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let dir = std::env::temp_dir().join(format!("bulwark-amqp-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("config dir");
    let config_file = dir.join("bulwark.toml");
    let config_text = format!(
        r#"
[http]
addr = "127.0.0.1:0"

[database]
url = "{database}"

[amqp]
url = "{amqp}"
namespace = "{namespace}"
prefetch = 4
reconnect_backoff_ms = 100
reconnect_backoff_max_ms = 1000

[sentiment]
workers = 1
"#,
        database = database.url,
        amqp = amqp_url(),
    );
    std::fs::write(&config_file, config_text).expect("config written");
    let nodes = [spawn_node(&config_file), spawn_node(&config_file)];
    let client = common::admin_client();
    for node in &nodes {
        eventually(Duration::from_secs(60), || async {
            let response = client
                .get(format!("{}/ready", node.base_url))
                .send()
                .await
                .ok()?;
            (response.status().as_u16() == 200).then_some(())
        })
        .await;
    }

    let (connection, channel) = test_channel().await;
    let total = 40;
    let texts: Vec<String> = (0..32).map(|index| format!("a fine day {index}")).collect();
    for index in 0..total {
        publish(
            &channel,
            &namespace,
            &plain(&format!("shared-{index}"), &json!({ "texts": texts })),
        )
        .await;
    }
    let request_id = format!("req-{}", uuid::Uuid::now_v7().simple());
    let mut traced = plain("traced", &json!({"texts": ["traced message"]}));
    traced.request_id = Some(request_id.clone());
    publish(&channel, &namespace, &traced).await;
    let _ = connection.close(200, "published".into()).await;

    let jobs = eventually(Duration::from_secs(120), || async {
        let response = client
            .get(format!("{}/v1/jobs?limit=500", nodes[0].base_url))
            .send()
            .await
            .ok()?;
        let page: Value = response.json().await.ok()?;
        let jobs = page["jobs"].as_array()?.clone();
        let done = jobs.len() == total + 1 && jobs.iter().all(|job| job["status"] == "succeeded");
        done.then_some(jobs)
    })
    .await;
    assert!(
        jobs.iter().all(|job| job["attempts"] == 1),
        "each job ran once"
    );
    for (index, node) in nodes.iter().enumerate() {
        let logs = node.logs.lock().expect("logs");
        let num_processed = logs
            .iter()
            .filter(|line| line.contains("job outcome published"))
            .count();
        assert!(num_processed > 0, "node {index} processed no job");
    }
    let traced_lines: Vec<String> = nodes
        .iter()
        .flat_map(|node| node.logs.lock().expect("logs").clone())
        .filter(|line| line.contains(&request_id))
        .collect();
    assert!(
        traced_lines
            .iter()
            .any(|line| line.contains("processing delivery")
                && line.contains("0af7651916cd43dd8448eb211c80319c")),
        "request id and traceparent in the processing logs: {traced_lines:?}"
    );
    drop(nodes);
    delete_namespace(&namespace).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Proves `bulwark publish` refuses a file with a bad line (exit 2, naming the line, nothing
/// published) and publishes a good file whose jobs then run on a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_cli_names_bad_lines_and_publishes_good_files() {
    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let dir = std::env::temp_dir().join(format!("bulwark-publish-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    let run = |file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_bulwark"))
            .args(["publish", "--kind", KIND, "--file"])
            .arg(file)
            .env("AMQP_URL", amqp_url())
            .env("BULWARK__AMQP__NAMESPACE", &namespace)
            .env("BULWARK_LOG", "warn")
            .output()
            .expect("bulwark publish runs")
    };
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"texts\": [\"ok\"]}\n\n{\"texts\": []}\n").expect("write");
    let output = run(&bad);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 3: payload.texts"), "{stderr}");

    let good = dir.join("good.jsonl");
    std::fs::write(
        &good,
        "{\"texts\": [\"good\"]}\n{\"texts\": [\"bad\", \"worse\"]}\n{\"texts\": [\"fine\"]}\n",
    )
    .expect("write");
    let output = run(&good);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    wait_all_succeeded(&service, 3).await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The chaos marker that makes the sentiment inference thread panic on a batch containing it.
const PANIC_MARKER: &str = "__chaos_panic__";

/// Drains the events queue without blocking and returns the events read.
async fn drain_events(channel: &Channel, queue: &str) -> Vec<Value> {
    let mut events = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        events.push(serde_json::from_slice(&message.delivery.data).expect("event is json"));
    }
    events
}

/// Returns the number of ready messages in `queue` (which must exist).
async fn ready_count(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|error| panic!("queue {queue} exists: {error}"))
        .message_count()
}

/// Proves a poison message cannot loop: a `sentiment.analyze` message whose text carries the
/// chaos panic marker crashes its sentiment worker on every delivery, is redelivered only up to
/// the job's `max_attempts` (below the queue's `x-delivery-limit`), and ends `dead` with exactly
/// one final event, its message gone from the job queue (not parked in the DLQ as a duplicate),
/// while a healthy message published beside it, and one published after, each succeed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_that_crashes_its_worker_ends_dead_within_the_limit() {
    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let max_attempts: u32 = 3;
    let delivery_limit: u32 = 5;
    let base = amqp_config(&namespace);
    let service = TestService::start_with(TestBackend::Postgres, move |config| {
        base(config);
        config.amqp.delivery_limit = delivery_limit;
        config.jobs.max_attempts = max_attempts;
        config.jobs.retry_backoff_ms = 50;
        config.jobs.retry_backoff_max_ms = 200;
        config.chaos.panic_on_text = Some(PANIC_MARKER.to_owned());
    })
    .await;
    let (connection, channel) = test_channel().await;
    let events_queue = topology_of(&namespace)
        .declare_event_listener(&channel, "job.#")
        .await
        .expect("events queue");

    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let poison_key = format!("poison-{suffix}");
    let healthy_key = format!("healthy-{suffix}");
    let poison_message = plain(
        &poison_key,
        &json!({"texts": [format!("this one {PANIC_MARKER} crashes")]}),
    );
    publish(&channel, &namespace, &poison_message).await;
    publish(
        &channel,
        &namespace,
        &plain(&healthy_key, &json!({"texts": ["what a lovely day"]})),
    )
    .await;

    let seen = Mutex::new(Vec::new());
    eventually(Duration::from_secs(90), || async {
        let drained = drain_events(&channel, &events_queue).await;
        let mut events = seen.lock().expect("events");
        events.extend(drained);
        let finished = |key: &str| events.iter().any(|event| event["idempotency_key"] == key);
        (finished(&poison_key) && finished(&healthy_key)).then_some(())
    })
    .await;
    let events = seen.lock().expect("events").clone();
    let event_of = |events: &[Value], key: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|event| event["idempotency_key"] == key)
            .cloned()
            .collect()
    };
    let poison_events = event_of(&events, &poison_key);
    assert_eq!(poison_events.len(), 1, "one final event: {poison_events:?}");
    let poison_event = &poison_events[0];
    assert_eq!(poison_event["status"], "dead", "{poison_event}");
    let healthy_events = event_of(&events, &healthy_key);
    assert_eq!(healthy_events.len(), 1, "{healthy_events:?}");
    assert_eq!(
        healthy_events[0]["status"], "succeeded",
        "{healthy_events:?}"
    );
    assert_eq!(healthy_events[0]["attempts"], 1, "{healthy_events:?}");

    let poison_id = poison_event["job_id"].as_str().expect("job id").to_owned();
    let (status, poison_job) = service.get_json(&format!("/v1/jobs/{poison_id}")).await;
    assert_eq!(status, 200, "{poison_job}");
    assert_eq!(poison_job["status"], "dead", "{poison_job}");
    let attempts = poison_job["attempts"].as_u64().expect("attempts");
    assert_eq!(
        attempts,
        u64::from(max_attempts),
        "crashed on every attempt, then stopped: {poison_job}"
    );
    assert!(
        attempts <= u64::from(delivery_limit),
        "within the delivery limit: {poison_job}"
    );
    assert!(
        poison_job["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("panicked")),
        "the crash is recorded: {poison_job}"
    );
    eprintln!(
        "poison job: attempts {attempts}, max_attempts {max_attempts}, delivery limit \
         {delivery_limit}, error {}",
        poison_job["error"]
    );

    // A message published after the poison one finished is served: the pool recovered, and the
    // poison message has not come back meanwhile.
    let sentinel_key = format!("after-{suffix}");
    publish(
        &channel,
        &namespace,
        &plain(&sentinel_key, &json!({"texts": ["still serving"]})),
    )
    .await;
    let sentinel = eventually(Duration::from_secs(60), || async {
        let drained = drain_events(&channel, &events_queue).await;
        let mut events = seen.lock().expect("events");
        events.extend(drained);
        event_of(&events, &sentinel_key).first().cloned()
    })
    .await;
    let events = seen.lock().expect("events").clone();
    assert_eq!(sentinel["status"], "succeeded", "{sentinel}");
    let (_, poison_again) = service.get_json(&format!("/v1/jobs/{poison_id}")).await;
    assert_eq!(
        poison_again["attempts"], poison_job["attempts"],
        "the poison job never ran again: {poison_again}"
    );
    assert_eq!(
        event_of(&events, &poison_key).len(),
        1,
        "no further poison events"
    );
    let job_queue = format!("{namespace}.{KIND}");
    let dead_letter_queue = format!("{namespace}.dlq.{KIND}");
    assert_eq!(
        ready_count(&channel, &job_queue).await,
        0,
        "job queue drained"
    );
    assert_eq!(
        ready_count(&channel, &dead_letter_queue).await,
        0,
        "the dead job is recorded once, as `dead`, not also dead-lettered"
    );
    let jobs = all_jobs(&service).await;
    assert_eq!(jobs.len(), 3, "one row per message, none lost: {jobs:?}");

    let _ = connection.close(200, "done".into()).await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Proves a broker-carried job that ended `dead` is sent over the broker again when its
/// (local) dead letter is requeued: the row goes back into the outbox and is published, so it
/// is not stranded in a table no local runner claims. The fault (an answer engine failing
/// every call) is fixed before the requeue, and the same job then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requeued_dead_broker_job_is_published_again_and_succeeds() {
    use bulwark_config::{ProviderConfig, ProviderKind};
    use bulwark_providers::simulated::{FaultKnobs, SimulatorParams, SimulatorServer};

    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let engine = SimulatorServer::start(
        "127.0.0.1:0",
        SimulatorParams {
            faults: FaultKnobs {
                error_rate: 1.0,
                ..FaultKnobs::default()
            },
            ..SimulatorParams::default()
        },
    )
    .await
    .expect("simulator listens");
    let base = amqp_config(&namespace);
    let engine_url = engine.base_url();
    let service = TestService::start_with(TestBackend::Postgres, move |config| {
        base(config);
        config.jobs.max_attempts = 2;
        config.dead_letters.max_retries = 0;
        config.dead_letters.scan_interval_ms = 200;
        config.dead_letters.recovery_interval_ms = 200;
        config.providers.insert(
            "engine".to_owned(),
            ProviderConfig {
                kind: ProviderKind::Openai,
                base_url: Some(engine_url),
                allow_plain_http: true,
                max_attempts: 1,
                breaker_min_calls: 1_000,
                ..ProviderConfig::default()
            },
        );
    })
    .await;

    let response = service
        .client
        .post(service.url("/v1/jobs"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&json!({"kind": "provider.complete",
                      "payload": {"provider": "engine", "prompt": "Best CRM tools?"}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status().as_u16(), 202);
    let job: Value = response.json().await.expect("job body");
    let job_id = job["id"].as_str().expect("job id").to_owned();
    let dead = service.wait_for_job(&job_id).await;
    assert_eq!(dead["status"], "dead", "{dead}");
    let letter = eventually(Duration::from_secs(30), || async {
        let (_, page) = service.get_json("/v1/dead-letters?queue=local").await;
        page["dead_letters"]
            .as_array()
            .and_then(|letters| letters.iter().find(|letter| letter["job_id"] == job_id))
            .cloned()
    })
    .await;
    assert_eq!(letter["status"], "parked", "{letter}");
    assert_eq!(
        letter["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the submitter's trace: {letter}"
    );

    engine.set_faults(FaultKnobs::default());
    let letter_id = letter["id"].as_str().expect("letter id");
    let (status, requeued) = service
        .post_json(&format!("/v1/dead-letters/{letter_id}/requeue"), &json!({}))
        .await;
    assert_eq!(status, 200, "{requeued}");
    let succeeded = service.wait_for_job(&job_id).await;
    assert_eq!(succeeded["status"], "succeeded", "{succeeded}");
    assert_eq!(succeeded["attempts"], 1, "fresh attempts: {succeeded}");
    assert_eq!(
        all_jobs(&service).await.len(),
        1,
        "the same job, not a new one"
    );
    eventually(Duration::from_secs(30), || async {
        let (_, letter) = service
            .get_json(&format!("/v1/dead-letters/{letter_id}"))
            .await;
        (letter["status"] == "recovered").then_some(())
    })
    .await;

    service.service.shutdown().await.expect("shutdown");
    engine.stop().await;
    delete_namespace(&namespace).await;
}

/// Proves a node stopping mid-stream drains its broker consumers: it takes no new deliveries,
/// finishes and acks those in flight, and leaves the rest in the queue, so no job is left
/// running under a lease or half-tried. A second node then runs every remaining job: each
/// message ends as one succeeded job with exactly one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_deliveries_in_flight_and_leaves_the_rest_queued() {
    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let mut config = common::test_config(&database.url);
    amqp_config(&namespace)(&mut config);
    config.amqp.prefetch = 8;
    config.shutdown.timeout_ms = 30_000;
    let first = bulwark::Service::start(&config)
        .await
        .expect("first node starts");
    let (connection, channel) = test_channel().await;
    let total = 150;
    publish_batch(&channel, &namespace, "drain", total).await;
    let _ = connection.close(200, "published".into()).await;

    let store = database.open().await;
    let count = |status: &'static str| {
        let store = store.clone();
        async move {
            store
                .count_jobs()
                .await
                .expect("counted")
                .iter()
                .filter(|count| count.status == status)
                .map(|count| count.count)
                .sum::<i64>()
        }
    };
    eventually(Duration::from_secs(60), || async {
        (count("succeeded").await > 0).then_some(())
    })
    .await;
    let report = first.shutdown().await.expect("first node shuts down");
    assert_eq!(
        report.num_deliveries_unfinished, 0,
        "every delivery in flight finished within the timeout"
    );
    assert_eq!(
        count("running").await,
        0,
        "no job left running under a lease"
    );
    assert_eq!(count("queued").await, 0, "no job half-tried and put back");
    let num_done_first = count("succeeded").await;
    assert!(
        (num_done_first as usize) < total,
        "the first node stopped mid-stream ({num_done_first} of {total} done)"
    );

    let second = bulwark::Service::start(&config)
        .await
        .expect("second node starts");
    let second = TestService::around(second, database).await;
    let jobs = wait_all_succeeded(&second, total).await;
    let retried: Vec<&Value> = jobs.iter().filter(|job| job["attempts"] != 1).collect();
    assert!(retried.is_empty(), "every job ran once: {retried:?}");
    eprintln!("first node finished {num_done_first} of {total} jobs before it stopped");
    store.close().await;
    second.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Proves the ingress consumers are supervised like every other actor: a consumer that
/// panics, returns an error from its handler, or hangs past the hang timeout is counted under
/// that kind by the `ingress` supervisor, restarted, and consumes again — a message published
/// after each fault runs to success, and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_that_panics_errs_or_hangs_is_restarted_and_consumes_again() {
    use bulwark_actors::Fault;
    use bulwark_broker::ConsumerMsg;
    use bulwark_supervisors::SupervisorMsg;
    use ractor::ActorRef;

    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let base = amqp_config(&namespace);
    let service = TestService::start_with(TestBackend::Postgres, move |config| {
        base(config);
        config.supervision.hang_timeout_ms = 500;
        config.supervision.backoff_base_ms = 10;
    })
    .await;
    let node = service.service.node_id.clone();
    let ingress: ActorRef<SupervisorMsg> = ractor::registry::where_is(format!("{node}/ingress"))
        .expect("ingress supervisor registered")
        .into();
    let consumer_name = format!("{node}/consumer-{KIND}");
    let child_name = format!("consumer-{KIND}");
    let (connection, channel) = test_channel().await;

    let faults = [
        (ConsumerMsg::Chaos(Fault::Panic), "panics"),
        (ConsumerMsg::Chaos(Fault::Error), "errors"),
        (
            ConsumerMsg::Chaos(Fault::Hang(Duration::from_secs(600))),
            "hangs",
        ),
    ];
    for (round, (fault, counter)) in faults.into_iter().enumerate() {
        let consumer: ActorRef<ConsumerMsg> = ractor::registry::where_is(consumer_name.clone())
            .expect("consumer registered")
            .into();
        consumer.cast(fault).expect("fault sent");
        let child = wait_for_child(
            &ingress,
            &child_name,
            Duration::from_secs(20),
            move |child| child.running && child.counters.restarts == round as u64 + 1,
        )
        .await;
        let counters = serde_json::to_value(child.counters).expect("counters");
        assert_eq!(counters[counter], 1, "{counter} counted: {counters}");

        publish(
            &channel,
            &namespace,
            &plain(
                &format!("after-{counter}"),
                &json!({"texts": ["back in business"]}),
            ),
        )
        .await;
        wait_all_succeeded(&service, round + 1).await;
    }
    let _ = connection.close(200, "done".into()).await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Proves an operator's restart of the `ingress` subtree under load loses no job and runs none
/// twice: the consumers drain (deliveries in flight finish and are acked), stop, start again and
/// consume the rest; every message ends as one succeeded job with exactly one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_ingress_under_load_loses_no_job() {
    use bulwark_supervisors::{ControlAction, control_supervisor};

    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let base = amqp_config(&namespace);
    let service = TestService::start_with(TestBackend::Postgres, move |config| {
        base(config);
        config.amqp.prefetch = 8;
    })
    .await;
    let (connection, channel) = test_channel().await;
    let total = 150;
    publish_batch(&channel, &namespace, "restart", total).await;
    let _ = connection.close(200, "published".into()).await;
    wait_mid_stream(&service, total).await;
    control_supervisor(
        service.service.root_supervisor(),
        vec!["ingress".to_owned()],
        ControlAction::Restart,
    )
    .await
    .expect("the operator's restart succeeds");
    let jobs = wait_all_succeeded(&service, total).await;
    let retried: Vec<&Value> = jobs.iter().filter(|job| job["attempts"] != 1).collect();
    assert!(retried.is_empty(), "every job ran once: {retried:?}");
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Proves the `application/x-bincode` envelope travels end to end: a Rust producer's bincode
/// message creates its job, which runs once and succeeds with the same result a JSON message
/// gets; a body that is not bincode is refused, and its dead letter keeps the bytes as
/// received (base64), ready to be published back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bincode_envelopes_run_and_malformed_ones_are_kept_as_received() {
    use bulwark_broker::{CONTENT_TYPE_BINCODE, ENVELOPE_VERSION, Envelope};

    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let (connection, channel) = test_channel().await;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let id = format!("bincode-{suffix}");
    let envelope = Envelope {
        v: ENVELOPE_VERSION,
        id: id.clone(),
        kind: KIND.to_owned(),
        payload: json!({"texts": ["what a wonderful evening"]}),
        idempotency_key: None,
        deadline: None,
        priority: None,
        run_at: None,
        timeout_ms: None,
    };
    let mut message = plain(&id, &json!({}));
    message.body = envelope.encode(CONTENT_TYPE_BINCODE).expect("encodes");
    message.content_type = CONTENT_TYPE_BINCODE;
    publish(&channel, &namespace, &message).await;
    let jobs = wait_all_succeeded(&service, 1).await;
    assert_eq!(jobs[0]["idempotency_key"], id.as_str(), "{jobs:?}");
    assert_eq!(jobs[0]["payload"], envelope.payload, "{jobs:?}");
    assert_eq!(
        jobs[0]["result"]["results"][0]["label"], "positive",
        "{jobs:?}"
    );

    let bad_id = format!("bad-bincode-{suffix}");
    let bad_body = vec![0xff, 0xfe, 0x00, 0x01];
    let mut bad = plain(&bad_id, &json!({}));
    bad.body = bad_body.clone();
    bad.content_type = CONTENT_TYPE_BINCODE;
    publish(&channel, &namespace, &bad).await;
    let letter = wait_dead_letter(&service, &bad_id).await;
    assert_eq!(letter["error_code"], "INVALID_MESSAGE", "{letter}");
    assert!(
        letter["error_message"]
            .as_str()
            .is_some_and(|reason| reason.contains("malformed bincode")),
        "{letter}"
    );
    assert_eq!(letter["headers"]["body_encoding"], "base64", "{letter}");
    assert_eq!(
        letter["headers"]["content_type"], CONTENT_TYPE_BINCODE,
        "{letter}"
    );
    use base64::Engine;
    let kept = base64::engine::general_purpose::STANDARD
        .decode(letter["message"].as_str().expect("message"))
        .expect("base64");
    assert_eq!(kept, bad_body, "the bytes as received");
    assert_eq!(all_jobs(&service).await.len(), 1, "no job for the bad one");
    let _ = connection.close(200, "done".into()).await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Returns a config change for a hostile-input test: the namespace's broker settings, its own
/// incident directory (so incidents of other tests are not counted), and `max_message_bytes`.
fn hostile_config(
    namespace: &str,
    incidents_dir: &std::path::Path,
    max_message_bytes: usize,
) -> impl FnOnce(&mut bulwark_config::Config) + use<> {
    let base = amqp_config(namespace);
    let incidents_dir = incidents_dir.display().to_string();
    move |config| {
        base(config);
        config.incidents.dir = incidents_dir;
        config.amqp.max_message_bytes = max_message_bytes;
    }
}

/// Returns a fresh, empty incident directory for one test.
fn incidents_dir(test: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("bulwark-{test}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("incident dir");
    dir
}

/// Proves the node survives hostile bodies (issue #13): the 10-byte bincode bomb (a first
/// string claiming 2^40 bytes, which used to abort the process), a body over
/// `amqp.max_message_bytes`, and random bytes as bincode and as JSON are each dead-lettered
/// with the reason in `x-bulwark-reject-reason` and stored as parked letters (the oversized one
/// without its body); the node keeps consuming (a healthy job published after them succeeds
/// and answers its reply queue), no job is created for them, and no panic incident is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_bodies_are_dead_lettered_and_the_node_keeps_consuming() {
    use bulwark_broker::CONTENT_TYPE_BINCODE;

    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let incidents = incidents_dir("hostile-bodies");
    let max_message_bytes = 16 * 1024;
    let service = TestService::start_with(
        TestBackend::Postgres,
        hostile_config(&namespace, &incidents, max_message_bytes),
    )
    .await;
    let (connection, channel) = test_channel().await;
    let suffix = uuid::Uuid::now_v7().simple().to_string();

    let mut bomb_body = vec![0x01, 0xfd];
    bomb_body.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let oversized_body = envelope(
        &format!("big-{suffix}"),
        &json!({"texts": ["a".repeat(2 * max_message_bytes)]}),
    );
    let random_body: Vec<u8> = (0..512u32)
        .map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let hostile = [
        ("bomb", bomb_body, CONTENT_TYPE_BINCODE, "malformed bincode"),
        (
            "big",
            oversized_body,
            "application/json",
            "amqp.max_message_bytes",
        ),
        (
            "random-bincode",
            random_body.clone(),
            CONTENT_TYPE_BINCODE,
            "malformed bincode",
        ),
        (
            "random-json",
            random_body,
            "application/json",
            "malformed json",
        ),
    ];
    for (name, body, content_type, _) in &hostile {
        let mut message = plain(&format!("{name}-{suffix}"), &json!({}));
        message.body = body.clone();
        message.content_type = content_type;
        publish(&channel, &namespace, &message).await;
    }
    let reply_queue = topology_of(&namespace)
        .declare_reply_queue(&channel)
        .await
        .expect("reply queue");
    let mut healthy = plain(
        &format!("healthy-{suffix}"),
        &json!({"texts": ["still standing"]}),
    );
    healthy.reply_to = Some(reply_queue.clone());
    publish(&channel, &namespace, &healthy).await;
    let (_, reply) = get_one(&channel, &reply_queue).await;
    let reply: Value = serde_json::from_slice(&reply).expect("reply is json");
    assert_eq!(reply["status"], "succeeded", "{reply}");

    for (name, body, _, expected_reason) in &hostile {
        let letter = wait_dead_letter(&service, &format!("{name}-{suffix}")).await;
        assert_eq!(letter["error_code"], "INVALID_MESSAGE", "{name}: {letter}");
        assert_eq!(letter["status"], "parked", "{name}: {letter}");
        let reason = letter["headers"]["headers"]["x-bulwark-reject-reason"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: reason header kept: {letter}"));
        assert!(reason.contains(expected_reason), "{name}: {reason}");
        assert_eq!(letter["headers"]["body_bytes"], body.len(), "{name}");
        if *name == "big" {
            assert_eq!(letter["headers"]["body_encoding"], "omitted", "{letter}");
            assert_eq!(letter["message"], "", "the body is not stored: {letter}");
        }
    }
    let jobs = all_jobs(&service).await;
    assert_eq!(
        jobs.len(),
        1,
        "only the healthy message made a job: {jobs:?}"
    );
    let (status, listed) = service.get_json("/v1/incidents").await;
    assert_eq!(status, 200, "{listed}");
    let panics: Vec<&Value> = listed["incidents"]
        .as_array()
        .map(|incidents| {
            incidents
                .iter()
                .filter(|incident| incident["kind"] == "panic")
                .collect()
        })
        .unwrap_or_default();
    assert!(panics.is_empty(), "no panic incident: {panics:?}");
    let metrics = service.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "bulwark_broker_messages_refused_total{{kind=\"{KIND}\",cause=\"too_large\"}}"
        )),
        "{metrics}"
    );

    let _ = connection.close(200, "done".into()).await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
    let _ = std::fs::remove_dir_all(&incidents);
}

/// Proves `reply_to` cannot make Bulwark publish into an arbitrary queue: a message whose
/// `reply_to` names a queue outside `amqp.reply_to_prefixes` still runs its job, but nothing
/// is published to that queue (checked after the node drained and stopped), and its outcome
/// event carries the reason in `x-bulwark-reply-refused`. RabbitMQ direct reply-to is
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reply_to_outside_the_allow_list_gets_nothing() {
    use futures::StreamExt;
    use lapin::options::BasicConsumeOptions;

    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let (connection, channel) = test_channel().await;
    let events_queue = topology_of(&namespace)
        .declare_event_listener(&channel, "job.#")
        .await
        .expect("events queue");
    let victim = format!("{namespace}-victim");
    channel
        .queue_declare(
            victim.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("victim queue");
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let refused_id = format!("refused-reply-{suffix}");
    let mut refused = plain(&refused_id, &json!({"texts": ["reply elsewhere"]}));
    refused.reply_to = Some(victim.clone());
    publish(&channel, &namespace, &refused).await;

    let (properties, body) = get_one(&channel, &events_queue).await;
    let event: Value = serde_json::from_slice(&body).expect("event is json");
    assert_eq!(event["idempotency_key"], refused_id.as_str(), "{event}");
    assert_eq!(event["status"], "succeeded", "the job still ran: {event}");
    let headers = properties.headers().clone().unwrap_or_default();
    let reason = match headers.inner().get("x-bulwark-reply-refused") {
        Some(AMQPValue::LongString(reason)) => reason.to_string(),
        other => panic!("reply refusal recorded on the event: {other:?}"),
    };
    assert!(reason.contains("amqp.reply_to_prefixes"), "{reason}");

    // Direct reply-to: consume the pseudo-queue (no ack) before publishing on this channel.
    let mut direct = channel
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "direct-reply".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("direct reply-to consumer");
    let mut direct_message = plain(
        &format!("direct-reply-{suffix}"),
        &json!({"texts": ["reply directly"]}),
    );
    direct_message.reply_to = Some("amq.rabbitmq.reply-to".to_owned());
    publish(&channel, &namespace, &direct_message).await;
    let delivery = tokio::time::timeout(Duration::from_secs(30), direct.next())
        .await
        .expect("a direct reply within 30 s")
        .expect("stream open")
        .expect("delivery");
    let reply: Value = serde_json::from_slice(&delivery.data).expect("reply is json");
    assert_eq!(reply["status"], "succeeded", "{reply}");

    // Stopping drains the node: every delivery has finished, so an empty victim queue now
    // means nothing was ever sent to it.
    service.service.shutdown().await.expect("shutdown");
    assert_eq!(ready_count(&channel, &victim).await, 0, "nothing published");
    let _ = connection.close(200, "done".into()).await;
    delete_namespace(&namespace).await;
}

/// Proves a producer that knows a job's id cannot get its result: a message whose id names an
/// existing job (submitted over HTTP) with another payload is dead-lettered with a conflict
/// reason (HTTP's 409), its `reply_to` gets nothing, and the job is neither run again nor
/// changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_naming_another_job_is_dead_lettered_as_a_conflict() {
    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let (status, job) = service
        .post_json(
            "/v1/jobs",
            &json!({"kind": KIND, "payload": {"texts": ["my private words"]}}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().expect("id").to_owned();
    let finished = service.wait_for_job(&job_id).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");

    let (connection, channel) = test_channel().await;
    let reply_queue = topology_of(&namespace)
        .declare_reply_queue(&channel)
        .await
        .expect("reply queue");
    let mut thief = plain(&job_id, &json!({"texts": ["give me the result"]}));
    thief.reply_to = Some(reply_queue.clone());
    publish(&channel, &namespace, &thief).await;
    let letter = wait_dead_letter(&service, &job_id).await;
    let reason = letter["error_message"].as_str().expect("reason");
    assert!(
        reason.starts_with("conflict:") && reason.contains("payload"),
        "{reason}"
    );
    assert!(
        !reason.contains("private"),
        "the reason does not leak: {reason}"
    );
    // The delivery ended with its dead letter: had it been answered, the reply would be there.
    let got = channel
        .basic_get(
            reply_queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get");
    assert!(got.is_none(), "no reply for a conflicting message");
    let after = service.wait_for_job(&job_id).await;
    assert_eq!(after["attempts"], 1, "{after}");
    assert_eq!(after["result"], finished["result"], "{after}");

    let _ = connection.close(200, "done".into()).await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Proves a batch submitted over HTTP with the broker carrying jobs is published with
/// confirms before the answer (the outbox is empty when the 200 arrives), each created job
/// runs once over the broker and succeeds, invalid jobs are neither stored nor published,
/// and replaying the batch answers `existing` without running anything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_submitted_jobs_are_published_and_run_over_the_broker() {
    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let mut jobs: Vec<Value> = (0..40)
        .map(|index| {
            json!({"kind": KIND, "payload": {"texts": [format!("lovely batch {index}")]},
                "idempotency_key": format!("batch-{index}")})
        })
        .collect();
    jobs.push(json!({"kind": KIND, "payload": {"texts": []}}));
    let batch = json!({ "jobs": jobs });
    let (status, answer) = service.post_json("/v1/jobs/batch", &batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["counts"],
        json!({"created": 40, "existing": 0, "conflict": 0, "invalid": 1})
    );
    let outbox = service
        .service
        .store
        .unpublished_jobs(i64::MAX, 100)
        .await
        .expect("outbox");
    assert!(
        outbox.is_empty(),
        "every created job was confirmed: {outbox:?}"
    );

    let stored = wait_all_succeeded(&service, 40).await;
    assert_eq!(stored.len(), 40, "nothing stored for the invalid job");
    assert!(
        stored.iter().all(|job| job["attempts"] == 1),
        "each job ran once"
    );

    let (status, replay) = service.post_json("/v1/jobs/batch", &batch).await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["counts"]["existing"], 40, "{replay}");
    let jobs_after = all_jobs(&service).await;
    assert_eq!(jobs_after.len(), 40);
    assert!(jobs_after.iter().all(|job| job["attempts"] == 1));

    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Proves a JSON envelope's `priority`, `timeout_ms` and `run_at` become the job's: a message
/// due in 1.5 s is stored and acked at once (queued, its row in the outbox), runs only once
/// due, and keeps the priority and timeout it asked for; an envelope with a priority over 9 is
/// dead-lettered naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn envelope_priority_timeout_and_run_at_become_the_jobs() {
    let _shared = BROKER.read().await;
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let (connection, channel) = test_channel().await;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let id = format!("later-{suffix}");
    let run_at_ms = bulwark_core::now_ms() + 1_500;
    let mut message = plain(&id, &json!({}));
    message.body = serde_json::to_vec(&json!({
        "v": 1, "id": id, "kind": KIND, "payload": {"texts": ["worth the wait"]},
        "priority": 8, "timeout_ms": 5_000,
        "run_at": bulwark_core::format_rfc3339_ms(run_at_ms),
    }))
    .expect("encodes");
    publish(&channel, &namespace, &message).await;
    let held = eventually(Duration::from_secs(10), || async {
        let jobs = all_jobs(&service).await;
        jobs.into_iter()
            .find(|job| job["idempotency_key"] == id.as_str())
    })
    .await;
    if bulwark_core::now_ms() < run_at_ms {
        assert_eq!(held["status"], "queued", "held until due: {held}");
    }
    assert_eq!(held["priority"], 8, "{held}");
    assert_eq!(held["timeout_ms"], 5_000, "{held}");
    let done = wait_all_succeeded(&service, 1).await;
    let started_at =
        bulwark_core::parse_rfc3339_ms(done[0]["started_at"].as_str().expect("started")).unwrap();
    assert!(started_at >= run_at_ms, "ran once due: {:?}", done[0]);
    assert_eq!(done[0]["attempts"], 1, "{:?}", done[0]);

    let bad_id = format!("too-high-{suffix}");
    let mut bad = plain(&bad_id, &json!({}));
    bad.body = serde_json::to_vec(&json!({
        "v": 1, "id": bad_id, "kind": KIND, "payload": {"texts": ["x"]}, "priority": 12,
    }))
    .expect("encodes");
    publish(&channel, &namespace, &bad).await;
    let letter = wait_dead_letter(&service, &bad_id).await;
    assert!(
        letter["error_message"]
            .as_str()
            .is_some_and(|reason| reason.contains("priority: must be 0 to 9")),
        "{letter}"
    );
    let _ = connection.close(200, "done".into()).await;
    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}
