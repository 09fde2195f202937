//! One suite of attempt scenarios run over every transport: the local queue on SQLite and on
//! PostgreSQL, and RabbitMQ (jobs stored in PostgreSQL). Both transports call the same attempt
//! core, so a scenario must end the same way whatever carried the job: same status, same
//! number of attempts, same error code.
//!
//! Needs `bulwark-providers` (the simulated answer engine, over loopback HTTP) for the
//! timeout scenario.

mod common;

use std::time::Duration;

use bulwark_config::{ProviderConfig, ProviderKind};
use bulwark_providers::simulated::{FaultKnobs, SimulatorParams, SimulatorServer};
use common::broker::delete_namespace;
use common::{TestService, Transport};
use serde_json::{Value, json};

/// A text that makes the inference thread panic on every attempt (the chaos knob).
const PANIC_MARKER: &str = "attempt-suite-panic-marker";

/// Attempts of every job in the suite.
const MAX_ATTEMPTS: u32 = 3;

/// The slow provider answers after this long; the timeout scenario's job allows far less.
const SLOW_PROVIDER_MS: u64 = 10_000;
const JOB_TIMEOUT_MS: i64 = 300;

/// How a scenario must end.
#[derive(Debug, PartialEq)]
struct Ending {
    status: String,
    attempts: i64,
    error_code: Option<String>,
}

impl Ending {
    fn of(job: &Value) -> Ending {
        Ending {
            status: job["status"].as_str().unwrap_or_default().to_owned(),
            attempts: job["attempts"].as_i64().unwrap_or(-1),
            error_code: job["error"]["code"].as_str().map(str::to_owned),
        }
    }
}

/// Boots a node of the transport with the suite's settings, its provider `slow` pointing at
/// `simulator`; returns it and the broker namespace to delete afterwards.
async fn start(transport: Transport, simulator: &SimulatorServer) -> (TestService, Option<String>) {
    let base_url = simulator.base_url();
    let settings = move |config: &mut bulwark_config::Config| {
        config.jobs.max_attempts = MAX_ATTEMPTS;
        config.jobs.retry_backoff_ms = 200;
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
        config.chaos.panic_on_text = Some(PANIC_MARKER.to_owned());
        // The provider's own limits are far above the job's timeout: the job's is what fires.
        config.providers.insert(
            "slow".to_owned(),
            ProviderConfig {
                kind: ProviderKind::Openai,
                base_url: Some(base_url.clone()),
                allow_plain_http: true,
                max_attempts: 1,
                attempt_timeout_ms: 2 * SLOW_PROVIDER_MS,
                call_deadline_ms: 2 * SLOW_PROVIDER_MS,
                ..ProviderConfig::default()
            },
        );
    };
    transport.start(settings).await
}

/// Submits one sentiment job over HTTP and returns it once finished.
async fn run_to_end(service: &TestService, text: &str) -> Value {
    let submission = json!({"kind": "sentiment.analyze", "payload": {"texts": [text]}});
    submit_to_end(service, &submission).await
}

/// Submits one job over HTTP and returns it once finished.
async fn submit_to_end(service: &TestService, submission: &Value) -> Value {
    let (status, job) = service.post_json("/v1/jobs", submission).await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().expect("job id").to_owned();
    service.wait_for_job(&job_id).await
}

/// Asserts the history of the job whose every attempt failed: each attempt retried but the
/// last, which ended `dead`, each with its node, times and error.
async fn assert_attempt_history(service: &TestService, job: &Value, transport: Transport) {
    let job_id = job["id"].as_str().expect("job id");
    let (status, history) = service
        .get_json(&format!("/v1/jobs/{job_id}/attempts"))
        .await;
    assert_eq!(status, 200, "{history}");
    let attempts = history["attempts"].as_array().expect("attempts");
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|attempt| attempt["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        outcomes,
        ["retried", "retried", "dead"],
        "{transport:?}: {history}"
    );
    for (number, attempt) in (1..).zip(attempts) {
        assert_eq!(attempt["attempt"], number, "{history}");
        assert!(attempt["node"].is_string(), "{transport:?}: {history}");
        assert!(attempt["started_at"].is_string(), "{history}");
        assert!(attempt["finished_at"].is_string(), "{history}");
        assert_eq!(attempt["error"]["code"], "INTERNAL_ERROR", "{history}");
    }
}

/// Runs every scenario on one transport and returns how each ended, in order.
async fn scenarios(transport: Transport) -> Vec<Ending> {
    let simulator = SimulatorServer::start(
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
    .expect("simulator listens");
    let (service, namespace_opt) = start(transport, &simulator).await;
    let succeeded = run_to_end(&service, "the support team was quick and kind").await;
    assert!(
        succeeded["result"]["results"].is_array(),
        "{transport:?}: {succeeded}"
    );
    let always_failing = run_to_end(&service, &format!("{PANIC_MARKER} in a text")).await;
    assert_attempt_history(&service, &always_failing, transport).await;
    let started = std::time::Instant::now();
    let timed_out = submit_to_end(
        &service,
        &json!({
            "kind": "provider.complete",
            "payload": {"provider": "slow", "prompt": "anything"},
            "timeout_ms": JOB_TIMEOUT_MS,
        }),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(SLOW_PROVIDER_MS),
        "{transport:?}: every attempt was aborted at its timeout, not after the provider answered"
    );
    assert_eq!(timed_out["timeout_ms"], JOB_TIMEOUT_MS, "{timed_out}");
    let endings = vec![
        Ending::of(&succeeded),
        Ending::of(&always_failing),
        Ending::of(&timed_out),
    ];
    service.service.shutdown().await.expect("node stops");
    simulator.stop().await;
    if let Some(namespace) = namespace_opt {
        delete_namespace(&namespace).await;
    }
    endings
}

/// Proves the attempt scenarios end the same over the local queue (SQLite and PostgreSQL) and
/// over RabbitMQ: a job that succeeds is stored on its first attempt with its result; a job
/// whose every attempt fails with a retryable error is retried with backoff until its attempts
/// run out and ends `dead` with the error's code, its history showing each attempt with its
/// node, times and error; a job whose every attempt runs past its
/// `timeout_ms` (a provider call that would answer in 10 s) is aborted each time at its
/// timeout and ends `dead` with `JOB_TIMEOUT` after its attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_ends_each_scenario_the_same_way() {
    let expected = vec![
        Ending {
            status: "succeeded".to_owned(),
            attempts: 1,
            error_code: None,
        },
        Ending {
            status: "dead".to_owned(),
            attempts: i64::from(MAX_ATTEMPTS),
            error_code: Some("INTERNAL_ERROR".to_owned()),
        },
        Ending {
            status: "dead".to_owned(),
            attempts: i64::from(MAX_ATTEMPTS),
            error_code: Some("JOB_TIMEOUT".to_owned()),
        },
    ];
    for transport in Transport::ALL {
        let endings = tokio::time::timeout(Duration::from_secs(90), scenarios(transport))
            .await
            .unwrap_or_else(|_| panic!("{transport:?}: the scenarios did not finish in 90 s"));
        assert_eq!(endings, expected, "{transport:?}");
    }
}
