//! One suite of attempt scenarios run over every transport: the local queue on SQLite and on
//! PostgreSQL, and RabbitMQ (jobs stored in PostgreSQL). Both transports call the same attempt
//! core, so a scenario must end the same way whatever carried the job: same status, same
//! number of attempts, same error code.

mod common;

use std::time::Duration;

use bulwark_store::testsuite::TestBackend;
use common::TestService;
use common::broker::{amqp_config, delete_namespace, unique_namespace};
use serde_json::{Value, json};

/// A text that makes the inference thread panic on every attempt (the chaos knob).
const PANIC_MARKER: &str = "attempt-suite-panic-marker";

/// Attempts of every job in the suite.
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy)]
enum Transport {
    LocalSqlite,
    LocalPostgres,
    Amqp,
}

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

/// Boots a node of the transport with the suite's settings; returns it and the broker
/// namespace to delete afterwards.
async fn start(transport: Transport) -> (TestService, Option<String>) {
    let settings = |config: &mut bulwark_config::Config| {
        config.jobs.max_attempts = MAX_ATTEMPTS;
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
        config.chaos.panic_on_text = Some(PANIC_MARKER.to_owned());
    };
    match transport {
        Transport::LocalSqlite => (
            TestService::start_with(TestBackend::Sqlite, settings).await,
            None,
        ),
        Transport::LocalPostgres => (
            TestService::start_with(TestBackend::Postgres, settings).await,
            None,
        ),
        Transport::Amqp => {
            let namespace = unique_namespace();
            let broker = amqp_config(&namespace);
            let service = TestService::start_with(TestBackend::Postgres, |config| {
                settings(config);
                broker(config);
            })
            .await;
            (service, Some(namespace))
        }
    }
}

/// Submits one sentiment job over HTTP and returns it once finished.
async fn run_to_end(service: &TestService, text: &str) -> Value {
    let submission = json!({"kind": "sentiment.analyze", "payload": {"texts": [text]}});
    let (status, job) = service.post_json("/v1/jobs", &submission).await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().expect("job id").to_owned();
    service.wait_for_job(&job_id).await
}

/// Runs every scenario on one transport and returns how each ended, in order.
async fn scenarios(transport: Transport) -> Vec<Ending> {
    let (service, namespace_opt) = start(transport).await;
    let succeeded = run_to_end(&service, "the support team was quick and kind").await;
    assert!(
        succeeded["result"]["results"].is_array(),
        "{transport:?}: {succeeded}"
    );
    let always_failing = run_to_end(&service, &format!("{PANIC_MARKER} in a text")).await;
    let endings = vec![Ending::of(&succeeded), Ending::of(&always_failing)];
    service.service.shutdown().await.expect("node stops");
    if let Some(namespace) = namespace_opt {
        delete_namespace(&namespace).await;
    }
    endings
}

/// Proves the attempt scenarios end the same over the local queue (SQLite and PostgreSQL) and
/// over RabbitMQ: a job that succeeds is stored on its first attempt with its result; a job
/// whose every attempt fails with a retryable error is retried with backoff until its attempts
/// run out and ends `dead` with the error's code.
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
    ];
    for transport in [
        Transport::LocalSqlite,
        Transport::LocalPostgres,
        Transport::Amqp,
    ] {
        let endings = tokio::time::timeout(Duration::from_secs(90), scenarios(transport))
            .await
            .unwrap_or_else(|_| panic!("{transport:?}: the scenarios did not finish in 90 s"));
        assert_eq!(endings, expected, "{transport:?}");
    }
}
