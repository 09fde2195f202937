//! The adapters and their resilience against the simulated provider over real loopback HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_providers::simulated::{
    FaultKnobs, SimulatedEngine, SimulatedEngineParams, SimulatorParams, SimulatorServer,
};
use bulwark_providers::{
    AnthropicProvider, ApiKey, BreakerParams, BreakerState, BulkheadParams, CompletionRequest,
    HttpProviderParams, OpenAiProvider, Provider, ProviderError, RateLimitParams, ResilienceParams,
    ResilientProvider, RetryParams,
};
use bulwark_test_support::eventually;

async fn simulator(faults: FaultKnobs) -> SimulatorServer {
    SimulatorServer::start(
        "127.0.0.1:0",
        SimulatorParams {
            faults,
            ..SimulatorParams::default()
        },
    )
    .await
    .expect("simulator listens")
}

fn http_params(name: &str, server: &SimulatorServer) -> HttpProviderParams {
    HttpProviderParams {
        name: name.to_owned(),
        base_url: server.base_url(),
        model: "sim-model".to_owned(),
        api_key_opt: None,
        default_max_tokens: 256,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        max_response_bytes: 4 * 1024 * 1024,
        allow_plain_http: true,
    }
}

fn openai(name: &str, server: &SimulatorServer) -> Arc<dyn Provider> {
    Arc::new(OpenAiProvider::new(http_params(name, server)).expect("client builds"))
}

/// Resilience for tests: one attempt, no limits, short timeouts; tests change what they need.
fn resilience() -> ResilienceParams {
    ResilienceParams {
        attempt_timeout: Duration::from_secs(5),
        call_deadline: Duration::from_secs(10),
        retry: RetryParams {
            max_attempts: 1,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
        ..ResilienceParams::default()
    }
}

fn request(prompt: &str, seed: u64) -> CompletionRequest {
    CompletionRequest {
        seed: Some(seed),
        system: Some("You are a helpful assistant.".to_owned()),
        request_id: Some("req-1".to_owned()),
        ..CompletionRequest::new(prompt)
    }
}

/// Proves both wire formats round-trip against the simulator: the answer is the simulated
/// engine's deterministic answer to the same request, with model and usage filled in, and the
/// two formats give the same text for the same prompt, system prompt and seed.
#[tokio::test]
async fn both_wire_formats_round_trip() {
    let server = simulator(FaultKnobs::default()).await;
    let prompt = "Which CRM should a startup pick? Compare Salesforce, HubSpot and Zoho.";
    let expected = SimulatedEngine::new(SimulatedEngineParams::default())
        .answer(&request(prompt, 11))
        .text;

    let openai = OpenAiProvider::new(http_params("openai", &server)).unwrap();
    let completion = openai.complete(&request(prompt, 11)).await.expect("answer");
    assert_eq!(completion.text, expected);
    assert_eq!(completion.model, "sim-model");
    assert_eq!(completion.provider, "openai");
    assert!(completion.usage.input_tokens > 0 && completion.usage.output_tokens > 0);

    let anthropic = AnthropicProvider::new(http_params("anthropic", &server)).unwrap();
    let message = anthropic
        .complete(&request(prompt, 11))
        .await
        .expect("answer");
    assert_eq!(message.text, expected);
    assert_eq!(message.provider, "anthropic");
    assert!(message.usage.output_tokens > 0);

    let other_seed = openai.complete(&request(prompt, 12)).await.unwrap();
    assert_ne!(
        other_seed.text, expected,
        "another seed gives another answer"
    );
    assert_eq!(server.stats().answered, 3);
    server.stop().await;
}

/// Proves the breaker opens under an error storm (later calls fail fast with CIRCUIT_OPEN and
/// never reach the upstream) and closes through a probe once the upstream recovers.
#[tokio::test]
async fn breaker_opens_under_error_storm_and_closes_after_recovery() {
    let server = simulator(FaultKnobs {
        error_rate: 1.0,
        ..FaultKnobs::default()
    })
    .await;
    let provider = ResilientProvider::new(
        openai("stormy", &server),
        ResilienceParams {
            breaker: BreakerParams {
                window: Duration::from_secs(30),
                min_calls: 4,
                max_failures: 4,
                failure_ratio: 0.5,
                open_for: Duration::from_millis(300),
                half_open_probes: 1,
            },
            ..resilience()
        },
    );
    for _ in 0..4 {
        let error = provider.complete(&request("hi", 1)).await.unwrap_err();
        assert_eq!(error.code(), "UPSTREAM_ERROR", "{error}");
    }
    assert_eq!(provider.breaker_state(), BreakerState::Open);
    let fast = provider.complete(&request("hi", 1)).await.unwrap_err();
    assert_eq!(fast.code(), "CIRCUIT_OPEN");
    assert!(fast.retry_after().is_some());
    assert_eq!(server.stats().requests, 4, "an open breaker sends nothing");

    server.set_faults(FaultKnobs::default());
    // The breaker lets a probe through once its open period ends.
    eventually(Duration::from_secs(5), || async {
        match provider.complete(&request("hi", 1)).await {
            Ok(_) => Some(()),
            Err(error) => {
                assert_eq!(error.code(), "CIRCUIT_OPEN", "{error}");
                None
            }
        }
    })
    .await;
    assert_eq!(provider.breaker_state(), BreakerState::Closed);
    server.stop().await;
}

/// Proves a 429 is retried no sooner than its Retry-After, and that a Retry-After beyond the
/// call's deadline ends the call at once instead of waiting.
#[tokio::test]
async fn rate_limited_answers_honour_retry_after() {
    let server = simulator(FaultKnobs {
        rate_limit_rate: 1.0,
        retry_after_ms: 300,
        ..FaultKnobs::default()
    })
    .await;
    let provider = ResilientProvider::new(
        openai("limited", &server),
        ResilienceParams {
            retry: RetryParams {
                max_attempts: 2,
                base: Duration::from_millis(1),
                max: Duration::from_millis(1),
            },
            ..resilience()
        },
    );
    let started = Instant::now();
    let error = provider.complete(&request("hi", 1)).await.unwrap_err();
    assert_eq!(error.code(), "RATE_LIMITED");
    assert_eq!(error.retry_after(), Some(Duration::from_millis(300)));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.stats().rate_limited, 2);

    server.set_faults(FaultKnobs {
        rate_limit_rate: 1.0,
        retry_after_ms: 60_000,
        ..FaultKnobs::default()
    });
    let impatient = ResilientProvider::new(
        openai("impatient", &server),
        ResilienceParams {
            call_deadline: Duration::from_secs(2),
            retry: RetryParams {
                max_attempts: 5,
                ..resilience().retry
            },
            ..resilience()
        },
    );
    let started = Instant::now();
    let error = impatient.complete(&request("hi", 1)).await.unwrap_err();
    assert_eq!(error.code(), "RATE_LIMITED");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "did not wait past the deadline"
    );
    assert_eq!(
        server.stats().rate_limited,
        3,
        "no retry when Retry-After passes the deadline"
    );
    server.stop().await;
}

/// Proves a hung provider is cut off by the per-attempt timeout while another provider keeps
/// answering at full speed in the meantime.
#[tokio::test]
async fn hung_provider_times_out_while_another_keeps_answering() {
    let hung_server = simulator(FaultKnobs {
        hang_rate: 1.0,
        ..FaultKnobs::default()
    })
    .await;
    let healthy_server = simulator(FaultKnobs::default()).await;
    let hung = ResilientProvider::new(
        openai("hung", &hung_server),
        ResilienceParams {
            attempt_timeout: Duration::from_millis(800),
            ..resilience()
        },
    );
    let healthy = ResilientProvider::new(openai("healthy", &healthy_server), resilience());
    let hung_call = tokio::spawn(async move {
        let started = Instant::now();
        (hung.complete(&request("hi", 1)).await, started.elapsed())
    });
    let mut num_answers = 0;
    while !hung_call.is_finished() {
        healthy
            .complete(&request("hi", 2))
            .await
            .expect("healthy answers");
        num_answers += 1;
    }
    let (outcome, elapsed) = hung_call.await.unwrap();
    let error = outcome.unwrap_err();
    assert_eq!(error.code(), "UPSTREAM_TIMEOUT", "{error}");
    assert!(elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(5));
    assert!(
        num_answers >= 5,
        "only {num_answers} answers while the other hung"
    );
    assert_eq!(hung_server.stats().hung, 1);
    hung_server.stop().await;
    healthy_server.stop().await;
}

/// Proves a malformed body and a dropped connection become clear, distinct errors.
#[tokio::test]
async fn malformed_body_and_dropped_connection_are_clear_errors() {
    let server = simulator(FaultKnobs {
        malformed_rate: 1.0,
        ..FaultKnobs::default()
    })
    .await;
    let provider = openai("garbled", &server);
    let error = provider.complete(&request("hi", 1)).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::MalformedResponse(_)),
        "{error:?}"
    );
    assert!(error.to_string().contains("garbled"), "{error}");
    assert!(error.is_retryable());

    server.set_faults(FaultKnobs {
        drop_rate: 1.0,
        ..FaultKnobs::default()
    });
    let error = provider.complete(&request("hi", 1)).await.unwrap_err();
    assert!(
        matches!(
            error,
            ProviderError::ConnectionFailed(_) | ProviderError::MalformedResponse(_)
        ),
        "{error:?}"
    );
    assert_eq!(server.stats().dropped, 1);
    server.stop().await;
}

/// Proves the bulkhead runs at most `max_concurrent` calls, queues `max_waiting`, and refuses
/// the rest at once with BULKHEAD_FULL.
#[tokio::test]
async fn bulkhead_bounds_concurrency_and_waiting() {
    let server = simulator(FaultKnobs {
        latency_ms: 300,
        ..FaultKnobs::default()
    })
    .await;
    let provider = Arc::new(ResilientProvider::new(
        openai("narrow", &server),
        ResilienceParams {
            bulkhead: BulkheadParams {
                max_concurrent: 1,
                max_waiting: 1,
            },
            ..resilience()
        },
    ));
    let mut calls = Vec::new();
    for seed in 0..3 {
        let provider = Arc::clone(&provider);
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            (
                provider.complete(&request("hi", seed)).await,
                started.elapsed(),
            )
        }));
        // Lets each call reach the bulkhead in order.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    let refused: Vec<_> = outcomes
        .iter()
        .filter(|(outcome, _)| {
            outcome
                .as_ref()
                .is_err_and(|error| error.code() == "BULKHEAD_FULL")
        })
        .collect();
    assert_eq!(refused.len(), 1, "{outcomes:?}");
    assert!(refused[0].1 < Duration::from_millis(200), "refused at once");
    assert_eq!(
        outcomes
            .iter()
            .filter(|(outcome, _)| outcome.is_ok())
            .count(),
        2
    );
    assert_eq!(server.stats().requests, 2);
    server.stop().await;
}

/// Proves the local requests-per-minute bucket refuses calls before they reach the upstream.
#[tokio::test]
async fn local_rate_limit_refuses_before_the_upstream() {
    let server = simulator(FaultKnobs::default()).await;
    let provider = ResilientProvider::new(
        openai("budgeted", &server),
        ResilienceParams {
            rate_limit: RateLimitParams {
                requests_per_minute: Some(2),
                tokens_per_minute: None,
            },
            ..resilience()
        },
    );
    provider.complete(&request("hi", 1)).await.expect("first");
    provider.complete(&request("hi", 2)).await.expect("second");
    let error = provider.complete(&request("hi", 3)).await.unwrap_err();
    assert_eq!(error.code(), "RATE_LIMITED");
    assert!(error.to_string().contains("local rate limit"), "{error}");
    assert_eq!(server.stats().requests, 2);
    server.stop().await;
}

/// Proves the API key reaches the upstream but never an error message or a Debug print, even
/// when the upstream echoes it back.
#[tokio::test]
async fn api_key_never_leaks() {
    let server = SimulatorServer::start(
        "127.0.0.1:0",
        SimulatorParams {
            api_key: Some("sk-right-key-0001".to_owned()),
            ..SimulatorParams::default()
        },
    )
    .await
    .unwrap();
    let secret = "sk-wrong-LEAKCHECK-9f8e7d";
    for format in ["openai", "anthropic"] {
        let params = HttpProviderParams {
            api_key_opt: Some(ApiKey::new(secret)),
            ..http_params(format, &server)
        };
        let provider: Arc<dyn Provider> = match format {
            "openai" => Arc::new(OpenAiProvider::new(params).unwrap()),
            _ => Arc::new(AnthropicProvider::new(params).unwrap()),
        };
        let resilient = ResilientProvider::new(provider, resilience());
        let error = resilient.complete(&request("hi", 1)).await.unwrap_err();
        assert_eq!(error.code(), "UNAUTHORIZED");
        assert!(!error.is_retryable());
        for shown in [
            error.to_string(),
            format!("{error:?}"),
            format!("{resilient:?}"),
        ] {
            assert!(!shown.contains(secret), "{format}: key leaked: {shown}");
        }
        assert!(
            error.to_string().contains("***"),
            "the echo was scrubbed: {error}"
        );
    }
    assert_eq!(server.stats().unauthorized, 2);
    let right = HttpProviderParams {
        api_key_opt: Some(ApiKey::new("sk-right-key-0001")),
        ..http_params("anthropic", &server)
    };
    AnthropicProvider::new(right)
        .unwrap()
        .complete(&request("hi", 1))
        .await
        .expect("the right key is accepted");
    server.stop().await;
}

/// Proves faults change live through `PUT /admin/faults`, invalid knobs are refused with the
/// field named, and `GET /admin/stats` counts what happened.
#[tokio::test]
async fn admin_endpoint_changes_faults_live() {
    let server = simulator(FaultKnobs::default()).await;
    let client = reqwest::Client::new();
    let admin = format!("http://{}/admin", server.addr());
    let provider = openai("live", &server);
    provider
        .complete(&request("hi", 1))
        .await
        .expect("healthy first");
    let response = client
        .put(format!("{admin}/faults"))
        .json(&serde_json::json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let error = provider.complete(&request("hi", 1)).await.unwrap_err();
    assert_eq!(error.code(), "UPSTREAM_ERROR");
    let refused = client
        .put(format!("{admin}/faults"))
        .json(&serde_json::json!({"hang_rate": 3.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    assert!(refused.text().await.unwrap().starts_with("hang_rate"));
    let stats: serde_json::Value = client
        .get(format!("{admin}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["answered"], 1);
    assert_eq!(stats["errors"], 1);
    server.stop().await;
}
