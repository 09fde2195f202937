//! The providers subsystem in a running node: `provider.complete` jobs over real loopback HTTP
//! against the simulated provider, validation, fallback, secrets, `/health`, and the provider
//! actors under their supervisor.

mod common;

use std::time::{Duration, Instant};

use bulwark_actors::{Fault, ProviderMsg};
use bulwark_config::{Config, ProviderConfig, ProviderKind, SecretRef};
use bulwark_providers::CompletionRequest;
use bulwark_providers::simulated::{FaultKnobs, SimulatorParams, SimulatorServer};
use bulwark_store::testsuite::TestBackend;
use bulwark_test_support::eventually;
use common::TestService;
use ractor::ActorRef;
use serde_json::{Value, json};

async fn simulator(params: SimulatorParams) -> SimulatorServer {
    SimulatorServer::start("127.0.0.1:0", params)
        .await
        .expect("simulator listens")
}

fn http_provider(kind: ProviderKind, server: &SimulatorServer) -> ProviderConfig {
    ProviderConfig {
        kind,
        base_url: Some(server.base_url()),
        allow_plain_http: true,
        max_attempts: 1,
        attempt_timeout_ms: 2_000,
        call_deadline_ms: 3_000,
        ..ProviderConfig::default()
    }
}

async fn submit(service: &TestService, payload: Value) -> Value {
    let (status, job) = service
        .post_json(
            "/v1/jobs",
            &json!({"kind": "provider.complete", "payload": payload}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    service
        .wait_for_job(job["id"].as_str().expect("job id"))
        .await
}

/// Finds the `providers` supervisor in `/health`.
fn providers_supervisor(health: &Value) -> Option<Value> {
    health["supervision"]["supervisors"]
        .as_array()?
        .iter()
        .find(|supervisor| supervisor["name"] == "providers")
        .cloned()
}

/// Proves a `provider.complete` job runs through both HTTP adapters against the simulator and
/// stores the completion, that `/health` shows each provider's breaker, and that the provider
/// metrics are exported.
#[tokio::test]
async fn provider_complete_jobs_run_over_http() {
    let server = simulator(SimulatorParams::default()).await;
    let service = TestService::start_with(TestBackend::Sqlite, |config: &mut Config| {
        config.providers.insert(
            "openai-sim".to_owned(),
            http_provider(ProviderKind::Openai, &server),
        );
        config.providers.insert(
            "anthropic-sim".to_owned(),
            http_provider(ProviderKind::Anthropic, &server),
        );
    })
    .await;
    for provider in ["openai-sim", "anthropic-sim"] {
        let job = submit(
            &service,
            json!({"provider": provider, "prompt": "Best CRM? Compare Salesforce and Zoho.", "params": {"seed": 3, "max_tokens": 200}}),
        )
        .await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"]["provider"], provider);
        assert!(
            !job["result"]["text"].as_str().unwrap_or("").is_empty(),
            "{job}"
        );
        assert!(
            job["result"]["usage"]["output_tokens"]
                .as_u64()
                .unwrap_or(0)
                > 0
        );
    }
    assert_eq!(server.stats().answered, 2);

    let (_, health) = service.get_json("/health").await;
    let components = health["components"].as_array().expect("components");
    for provider in ["openai-sim", "anthropic-sim"] {
        let component = components
            .iter()
            .find(|component| component["name"] == format!("provider:{provider}"))
            .unwrap_or_else(|| panic!("{provider} in /health: {health}"));
        assert_eq!(component["status"], "up", "{component}");
        assert!(
            component["detail"]
                .as_str()
                .unwrap_or("")
                .contains("breaker closed")
        );
    }
    let providers = providers_supervisor(&health).expect("providers supervisor in /health");
    assert_eq!(providers["children_running"], 2);
    let metrics = service.get_text("/metrics").await;
    assert!(
        metrics.contains("bulwark_provider_calls_total"),
        "metrics exported"
    );
    assert!(metrics.contains("bulwark_provider_breaker_state"));
    server.stop().await;
}

/// Proves bad `provider.complete` payloads are refused with 422 naming the field, before
/// anything is stored, and an unknown provider fails the job for good, naming the field.
#[tokio::test]
async fn provider_complete_validation_names_the_field() {
    let service = TestService::start_with(TestBackend::Sqlite, |config: &mut Config| {
        config
            .providers
            .insert("sim".to_owned(), ProviderConfig::default());
    })
    .await;
    let cases = [
        (json!({"prompt": "hi"}), "payload:"),
        (json!({"provider": "sim", "prompt": ""}), "payload.prompt:"),
        (
            json!({"provider": "sim", "prompt": "hi", "params": {"temperature": 5}}),
            "payload.params.temperature:",
        ),
        (
            json!({"provider": "sim", "prompt": "hi", "params": {"stream": true}}),
            "payload.params.stream:",
        ),
    ];
    for (payload, field) in cases {
        let (status, body) = service
            .post_json(
                "/v1/jobs",
                &json!({"kind": "provider.complete", "payload": payload}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["code"], "VALIDATION_FAILED");
        assert!(
            body["message"].as_str().unwrap_or("").starts_with(field),
            "{field}: {body}"
        );
    }
    let job = submit(&service, json!({"provider": "nope", "prompt": "hi"})).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("payload.provider: unknown provider `nope`"),
        "{job}"
    );
}

/// Proves a failing provider's calls go to its fallback, the result says who answered, and
/// `/health` shows the failing provider degraded with its breaker open.
#[tokio::test]
async fn fallback_answers_when_the_provider_fails() {
    let broken = simulator(SimulatorParams {
        faults: FaultKnobs {
            error_rate: 1.0,
            ..FaultKnobs::default()
        },
        ..SimulatorParams::default()
    })
    .await;
    let healthy = simulator(SimulatorParams::default()).await;
    let service = TestService::start_with(TestBackend::Sqlite, |config: &mut Config| {
        let mut primary = http_provider(ProviderKind::Openai, &broken);
        primary.fallback = vec!["backup".to_owned()];
        primary.breaker_min_calls = 1;
        primary.breaker_open_ms = 60_000;
        config.providers.insert("primary".to_owned(), primary);
        config.providers.insert(
            "backup".to_owned(),
            http_provider(ProviderKind::Anthropic, &healthy),
        );
    })
    .await;
    let job = submit(
        &service,
        json!({"provider": "primary", "prompt": "Best tools?"}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["provider"], "backup");
    assert_eq!(broken.stats().errors, 1);
    assert_eq!(healthy.stats().answered, 1);
    let (status, health) = service.get_json("/health").await;
    assert_eq!(
        status, 200,
        "a provider's open breaker leaves the node up: {health}"
    );
    let primary = health["components"]
        .as_array()
        .and_then(|components| {
            components
                .iter()
                .find(|component| component["name"] == "provider:primary")
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(primary["status"], "degraded", "{health}");
    assert!(
        primary["detail"]
            .as_str()
            .unwrap_or("")
            .contains("breaker open"),
        "{primary}"
    );
    let metrics = service.get_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("bulwark_provider_breaker_state{provider=\"primary\"} 2")),
        "breaker state gauge is 2 (open)"
    );
    broken.stop().await;
    healthy.stop().await;
}

/// Proves an API key given by reference reaches the upstream but never a job's error, an API
/// body, `/health`, or the printed configuration, even when the upstream echoes it.
#[tokio::test]
async fn api_keys_never_leak() {
    let secret = format!("sk-leakcheck-{}", uuid::Uuid::now_v7().simple());
    let server = simulator(SimulatorParams {
        api_key: Some("sk-the-right-one".to_owned()),
        ..SimulatorParams::default()
    })
    .await;
    let key_file = std::env::temp_dir().join(format!("bulwark-key-{}", uuid::Uuid::now_v7()));
    std::fs::write(&key_file, format!("{secret}\n")).expect("key file written");
    let key_path = key_file.to_string_lossy().into_owned();
    let mut printed_config = String::new();
    let service = TestService::start_with(TestBackend::Sqlite, |config: &mut Config| {
        let mut provider = http_provider(ProviderKind::Openai, &server);
        provider.api_key = Some(SecretRef {
            env: None,
            file: Some(key_path.clone()),
        });
        config.providers.insert("keyed".to_owned(), provider);
        printed_config = toml::to_string_pretty(config).expect("config prints");
    })
    .await;
    let job = submit(&service, json!({"provider": "keyed", "prompt": "hi"})).await;
    let _ = std::fs::remove_file(&key_file);
    assert_eq!(
        job["status"], "failed",
        "a refused key is not retried: {job}"
    );
    let message = job["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("UNAUTHORIZED") && message.contains("***"),
        "{job}"
    );
    assert_eq!(
        server.stats().unauthorized,
        1,
        "the key reached the upstream"
    );
    let job_id = job["id"].as_str().unwrap_or("");
    let shown = [
        job.to_string(),
        service
            .get_json(&format!("/v1/jobs/{job_id}"))
            .await
            .1
            .to_string(),
        service
            .get_json("/v1/jobs?kind=provider.complete")
            .await
            .1
            .to_string(),
        service.get_json("/health").await.1.to_string(),
        service.get_text("/metrics").await,
        printed_config.clone(),
    ];
    for text in shown {
        assert!(!text.contains(&secret), "key leaked: {text}");
    }
    assert!(
        printed_config.contains(&key_path),
        "the reference is shown, not the key"
    );
    server.stop().await;
}

/// Proves a provider actor that panics, returns an error or hangs is restarted by the
/// `providers` supervisor (and counted), that a caller waiting on a hung actor gets an error
/// instead of hanging, and that calls succeed again after each restart.
#[tokio::test]
async fn provider_actor_failures_are_supervised() {
    let service = TestService::start_with(TestBackend::Sqlite, |config: &mut Config| {
        config.supervision.hang_timeout_ms = 300;
        config.supervision.backoff_base_ms = 10;
        config.providers.insert(
            "sim".to_owned(),
            ProviderConfig {
                call_deadline_ms: 1_000,
                attempt_timeout_ms: 1_000,
                ..ProviderConfig::default()
            },
        );
    })
    .await;
    let router = service
        .service
        .providers
        .clone()
        .expect("providers configured");
    let actor_name = bulwark_supervisors::provider_actor_name(&service.service.node_id, "sim");
    let actor = || -> Option<ActorRef<ProviderMsg>> {
        ractor::registry::where_is(actor_name.clone()).map(Into::into)
    };
    let counter = |field: &'static str| {
        let service = &service;
        async move {
            let (_, health) = service.get_json("/health").await;
            providers_supervisor(&health).map(|supervisor| {
                (
                    supervisor[field].as_u64().unwrap_or(0),
                    supervisor["children_running"] == 1,
                )
            })
        }
    };
    router
        .complete("sim", CompletionRequest::new("Best tools?"))
        .await
        .expect("answers before any fault");

    for (chaos, field) in [(Fault::Panic, "panics"), (Fault::Error, "errors")] {
        actor()
            .expect("actor registered")
            .cast(ProviderMsg::Chaos(chaos))
            .expect("sent");
        eventually(Duration::from_secs(10), || async {
            match counter(field).await {
                Some((1, true)) => Some(()),
                _ => None,
            }
        })
        .await;
        router
            .complete("sim", CompletionRequest::new("Best tools?"))
            .await
            .expect("answers after the restart");
    }

    actor()
        .expect("actor registered")
        .cast(ProviderMsg::Chaos(Fault::Hang(Duration::from_secs(30))))
        .expect("sent");
    let started = Instant::now();
    let error = router
        .complete("sim", CompletionRequest::new("Best tools?"))
        .await
        .expect_err("a hung actor gives an error");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "caller waited {:?}",
        started.elapsed()
    );
    assert!(error.is_retryable(), "{error}");
    eventually(Duration::from_secs(10), || async {
        match counter("hangs").await {
            Some((1, true)) => Some(()),
            _ => None,
        }
    })
    .await;
    eventually(Duration::from_secs(10), || async {
        router
            .complete("sim", CompletionRequest::new("Best tools?"))
            .await
            .ok()
    })
    .await;
}
