//! The HTTP API driven over loopback against a service booted on port 0.

mod common;

use bulwark_core::{now_ms, parse_rfc3339_ms};
use bulwark_store::testsuite::TestBackend;
use common::TestService;
use serde_json::{Value, json};

/// Proves `POST /v1/sentiment` scores each text in order with the ONNX engine by default, and
/// that each strategy and the neutral band can be chosen per request.
#[tokio::test]
async fn sentiment_scores_texts_with_each_strategy() {
    let service = TestService::start(TestBackend::Sqlite).await;
    let texts = json!([
        "I love this product, it is wonderful!",
        "This is terrible and I hate it."
    ]);
    let (status, response) = service
        .post_json("/v1/sentiment", &json!({ "texts": texts }))
        .await;
    assert_eq!(status, 200, "{response}");
    let results = response["results"].as_array().unwrap();
    let labels: Vec<&str> = results
        .iter()
        .map(|result| result["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["positive", "negative"]);
    assert_eq!(results[0]["engine"], "onnx");
    assert!(
        results[0]["model_version"]
            .as_str()
            .unwrap()
            .starts_with("sentiment-minilm-sst2")
    );
    assert!(results[0]["score"].as_f64().unwrap() > 0.5);
    assert!(results[1]["score"].as_f64().unwrap() < -0.5);

    for (strategy, engine) in [
        ("ensemble", "ensemble(onnx,lexicon)"),
        ("consensus", "consensus(onnx,lexicon)"),
    ] {
        let body = json!({ "texts": texts, "strategy": strategy });
        let (status, response) = service.post_json("/v1/sentiment", &body).await;
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["results"][0]["engine"], engine);
        assert_eq!(response["results"][0]["label"], "positive");
        assert_eq!(response["results"][1]["label"], "negative");
    }
    let unsure = json!({ "texts": ["It is a movie."], "neutral_threshold": 0.999 });
    let (_, response) = service.post_json("/v1/sentiment", &unsure).await;
    assert_eq!(response["results"][0]["label"], "neutral", "{response}");

    let (status, response) = service
        .post_json(
            "/v1/sentiment",
            &json!({ "texts": ["a"], "strategy": "vote" }),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        response["message"]
            .as_str()
            .unwrap()
            .starts_with("strategy")
    );
    let (status, _) = service
        .post_json(
            "/v1/sentiment",
            &json!({ "texts": ["a"], "neutral_threshold": 2.0 }),
        )
        .await;
    assert_eq!(status, 422);
}

/// Proves a node configured for the lexicon engine answers with VADER, neutral included.
#[tokio::test]
async fn lexicon_engine_can_be_chosen() {
    let service = TestService::start_with(TestBackend::Sqlite, |config| {
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
    })
    .await;
    let body = json!({ "texts": ["I love it", "I hate it", "The box is blue."] });
    let (status, response) = service.post_json("/v1/sentiment", &body).await;
    assert_eq!(status, 200, "{response}");
    let labels: Vec<&str> = response["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["positive", "negative", "neutral"]);
    assert_eq!(response["results"][0]["engine"], "lexicon");
}

/// Proves a node whose model cannot be loaded still starts, serves the lexicon, and says it is
/// degraded in `/ready`, `/health` and a metric.
#[tokio::test]
async fn missing_model_starts_degraded_on_the_lexicon() {
    let service = TestService::start_with(TestBackend::Sqlite, |config| {
        config.sentiment.model_dir = Some("/nonexistent/bulwark-model".to_owned());
    })
    .await;
    let (status, response) = service
        .post_json("/v1/sentiment", &json!({ "texts": ["I love it"] }))
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["results"][0]["engine"], "lexicon");
    let (status, ready) = service.get_json("/ready").await;
    assert_eq!(status, 200, "degraded is still ready: {ready}");
    assert_eq!(ready["degraded"][0]["name"], "sentiment_engine", "{ready}");
    let (_, health) = service.get_json("/health").await;
    assert_eq!(health["status"], "degraded");
    let engine = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sentiment_engine")
        .unwrap();
    assert!(
        engine["detail"].as_str().unwrap().contains("make model"),
        "tells how to fix it: {engine}"
    );
    assert!(
        !health.to_string().contains("/nonexistent"),
        "no file path reaches a client: {health}"
    );
    let metrics = service.get_text("/metrics").await;
    assert!(metrics.contains("bulwark_sentiment_degraded"), "{metrics}");
}

fn assert_error_body(body: &Value, code: &str, request_id_opt: Option<&str>) {
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
    assert!(body["retriable"].is_boolean(), "{body}");
    let request_id = body["request_id"].as_str().expect("request_id present");
    if let Some(expected) = request_id_opt {
        assert_eq!(request_id, expected);
    }
}

/// Proves every kind of bad input gets a clear 4xx with the one error body, and that
/// nothing is stored for any of them.
#[tokio::test]
async fn bad_input_gets_clear_4xx_and_stores_nothing() {
    let service = TestService::start(TestBackend::Sqlite).await;
    let client = &service.client;

    let malformed = client
        .post(service.url("/v1/jobs"))
        .header("content-type", "application/json")
        .header("x-request-id", "bad-json-1")
        .body("{\"kind\": \"sentiment.analyze\", \"payload\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.headers()["x-request-id"], "bad-json-1");
    assert_error_body(
        &malformed.json().await.unwrap(),
        "VALIDATION_FAILED",
        Some("bad-json-1"),
    );

    let huge = "x".repeat(1024 * 1024 + 10);
    let too_large = client
        .post(service.url("/v1/sentiment"))
        .header("content-type", "application/json")
        .body(format!("{{\"texts\": [\"{huge}\"]}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    assert_error_body(&too_large.json().await.unwrap(), "PAYLOAD_TOO_LARGE", None);

    let cases = [
        ("/v1/sentiment", json!({ "texts": [] }), "texts"),
        (
            "/v1/sentiment",
            json!({ "texts": ["ok", "y".repeat(10_001)] }),
            "texts[1]",
        ),
        (
            "/v1/jobs",
            json!({ "kind": "video.render", "payload": {} }),
            "kind",
        ),
        (
            "/v1/jobs",
            json!({ "kind": "sentiment.analyze", "payload": { "texts": [] } }),
            "payload.texts",
        ),
        (
            "/v1/jobs",
            json!({ "kind": "sentiment.analyze", "payload": { "texts": ["a"] }, "idempotency_key": "" }),
            "idempotency_key",
        ),
        (
            "/v1/jobs",
            json!({ "kind": "sentiment.analyze", "payload": { "texts": ["a"] }, "priority": 10 }),
            "priority",
        ),
        (
            "/v1/jobs",
            json!({ "kind": "sentiment.analyze", "payload": { "texts": ["a"] }, "delay_ms": -1 }),
            "delay_ms",
        ),
        (
            "/v1/jobs",
            json!({ "kind": "sentiment.analyze", "payload": { "texts": ["a"] }, "run_at": "tomorrow" }),
            "run_at",
        ),
        (
            "/v1/jobs",
            json!({ "kind": "sentiment.analyze", "payload": { "texts": ["a"] },
                    "run_at": "2030-01-01T00:00:00Z", "delay_ms": 5 }),
            "run_at",
        ),
        (
            "/v1/jobs",
            json!({ "kind": "sentiment.analyze", "payload": { "texts": ["a"] },
                    "run_at": "2999-01-01T00:00:00Z" }),
            "run_at",
        ),
        (
            "/v1/jobs",
            json!({ "kind": "sentiment.analyze", "payload": { "texts": ["a"] }, "timeout_ms": 0 }),
            "timeout_ms",
        ),
        (
            "/v1/jobs",
            json!({ "kind": "sentiment.analyze", "payload": { "texts": ["a"] },
                    "timeout_ms": 86_400_001 }),
            "timeout_ms",
        ),
    ];
    for (path, body, field) in cases {
        let (status, response) = service.post_json(path, &body).await;
        assert_eq!(status, 422, "{path} {body}: {response}");
        assert_error_body(&response, "VALIDATION_FAILED", None);
        assert!(
            response["message"].as_str().unwrap().starts_with(field),
            "{response}"
        );
        assert_eq!(response["retriable"], false);
    }

    let wrong_shape = [
        ("/v1/sentiment", json!({ "texts": "not a list" }), "texts:"),
        (
            "/v1/sentiment",
            json!({ "texts": ["a"], "unknown": 1 }),
            "unknown:",
        ),
        ("/v1/jobs", json!({ "payload": {} }), "kind:"),
    ];
    for (path, body, field) in wrong_shape {
        let (status, response) = service.post_json(path, &body).await;
        assert_eq!(status, 422, "{path} {body}: {response}");
        assert_error_body(&response, "VALIDATION_FAILED", None);
        assert!(
            response["message"].as_str().unwrap().starts_with(field),
            "{response}"
        );
    }
    let malformed = service
        .client
        .post(service.url("/v1/sentiment"))
        .header("content-type", "application/json")
        .body("{\"texts\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400, "malformed JSON is 400");

    let (status, response) = service.get_json("/v1/jobs?status=sleeping").await;
    assert_eq!(status, 422, "{response}");
    assert!(response["message"].as_str().unwrap().starts_with("status"));
    let (status, _) = service.get_json("/v1/jobs?limit=0").await;
    assert_eq!(status, 422);
    let (status, _) = service.get_json("/v1/jobs?cursor=not-a-cursor").await;
    assert_eq!(status, 422);
    let (status, response) = service
        .get_json("/v1/jobs/0190b5a2-0000-7000-8000-000000000000")
        .await;
    assert_eq!(status, 404);
    assert_error_body(&response, "RESOURCE_NOT_FOUND", None);
    let (status, response) = service.get_json("/no/such/route").await;
    assert_eq!(status, 404);
    assert_error_body(&response, "RESOURCE_NOT_FOUND", None);

    let (status, listed) = service.get_json("/v1/jobs").await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        0,
        "no bad input was stored: {listed}"
    );
}

/// Proves a job runs to success, keeps the request id it was submitted with, and that the same
/// idempotency key returns the same job while a different job under that key is refused.
async fn job_lifecycle_and_idempotency(backend: TestBackend) {
    let service = TestService::start(backend).await;
    let submission = json!({
        "kind": "sentiment.analyze",
        "payload": { "texts": ["What a great day"] },
        "idempotency_key": "order-42",
    });
    let response = service
        .client
        .post(service.url("/v1/jobs"))
        .header("x-request-id", "lifecycle-req")
        .json(&submission)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.unwrap();
    let job_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "queued");

    let done = service.wait_for_job(&job_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["request_id"], "lifecycle-req");
    let trace_id = done["trace_id"].as_str().expect("a trace was started");
    assert!(
        trace_id.len() == 32 && trace_id.bytes().all(|byte| byte.is_ascii_hexdigit()),
        "{done}"
    );
    assert_eq!(done["result"]["results"][0]["label"], "positive");
    assert!(done["finished_at"].is_string());

    let replay = service
        .client
        .post(service.url("/v1/jobs"))
        .json(&submission)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["id"], job_id.as_str());

    let mut different = submission.clone();
    different["payload"] = json!({ "texts": ["another text"] });
    let (status, conflict) = service.post_json("/v1/jobs", &different).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["code"], "CONFLICT");

    let (_, listed) = service
        .get_json("/v1/jobs?kind=sentiment.analyze&status=succeeded")
        .await;
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        1,
        "one job, never a second: {listed}"
    );
}

/// Proves a delayed job waits for its time and then runs, and that its priority (given, or the
/// default), due time and result TTL are shown (a TTL under a second is `422`).
async fn delayed_and_prioritised_jobs(backend: TestBackend) {
    let service = TestService::start(backend).await;
    let submit = |body: Value| {
        let service = &service;
        async move {
            let (status, job) = service.post_json("/v1/jobs", &body).await;
            assert_eq!(status, 202, "{job}");
            job
        }
    };
    let delayed = submit(json!({
        "kind": "sentiment.analyze",
        "payload": { "texts": ["later"] },
        "delay_ms": 1_500,
        "priority": 9,
    }))
    .await;
    assert_eq!(delayed["priority"], 9);
    let created_at = parse_rfc3339_ms(delayed["created_at"].as_str().unwrap()).unwrap();
    let run_at = parse_rfc3339_ms(delayed["run_at"].as_str().unwrap()).unwrap();
    assert!(
        (1_400..=1_600).contains(&(run_at - created_at)),
        "due 1.5 s after creation: {delayed}"
    );
    let immediate = submit(json!({
        "kind": "sentiment.analyze",
        "payload": { "texts": ["now"] },
        "result_ttl_ms": 60_000,
    }))
    .await;
    assert_eq!(immediate["priority"], 5, "the default priority");
    assert_eq!(immediate["result_ttl_ms"], 60_000, "{immediate}");
    assert!(delayed.get("result_ttl_ms").is_none(), "{delayed}");
    let (status, refused) = service
        .post_json(
            "/v1/jobs",
            &json!({"kind": "sentiment.analyze", "payload": {"texts": ["x"]}, "result_ttl_ms": 500}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.to_string().contains("result_ttl_ms"), "{refused}");
    let done = service
        .wait_for_job(immediate["id"].as_str().unwrap())
        .await;
    assert_eq!(done["status"], "succeeded");
    let (_, waiting) = service
        .get_json(&format!("/v1/jobs/{}", delayed["id"].as_str().unwrap()))
        .await;
    if now_ms() < run_at {
        assert_eq!(
            waiting["status"], "queued",
            "not before its time: {waiting}"
        );
    }
    let done = service.wait_for_job(delayed["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let started_at = parse_rfc3339_ms(done["started_at"].as_str().unwrap()).unwrap();
    assert!(started_at >= run_at, "started at its time or after: {done}");
}

#[tokio::test]
async fn delayed_and_prioritised_jobs_on_sqlite() {
    delayed_and_prioritised_jobs(TestBackend::Sqlite).await;
}

#[tokio::test]
async fn delayed_and_prioritised_jobs_on_postgres() {
    delayed_and_prioritised_jobs(TestBackend::Postgres).await;
}

#[tokio::test]
async fn job_lifecycle_and_idempotency_on_sqlite() {
    job_lifecycle_and_idempotency(TestBackend::Sqlite).await;
}

#[tokio::test]
async fn job_lifecycle_and_idempotency_on_postgres() {
    job_lifecycle_and_idempotency(TestBackend::Postgres).await;
}

/// Proves cursor pagination over the API visits every job exactly once.
#[tokio::test]
async fn job_listing_paginates() {
    let service = TestService::start(TestBackend::Sqlite).await;
    let mut submitted = Vec::new();
    for index in 0..7 {
        let body = json!({ "kind": "sentiment.analyze", "payload": { "texts": [format!("text {index}")] } });
        let (status, job) = service.post_json("/v1/jobs", &body).await;
        assert_eq!(status, 202);
        submitted.push(job["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/jobs?limit=3".to_owned();
    loop {
        let (status, page) = service.get_json(&path).await;
        assert_eq!(status, 200);
        seen.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|job| job["id"].as_str().unwrap().to_owned()),
        );
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        path = format!("/v1/jobs?limit=3&cursor={cursor}");
    }
    submitted.reverse();
    assert_eq!(seen, submitted);
}

/// Proves the request id is echoed when valid, generated when absent or unsafe.
#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let service = TestService::start(TestBackend::Sqlite).await;
    let echoed = service
        .client
        .get(service.url("/live"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    let generated = service
        .client
        .get(service.url("/live"))
        .send()
        .await
        .unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a generated uuid: {id}");
    let unsafe_id = service
        .client
        .get(service.url("/live"))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(unsafe_id.headers()["x-request-id"], "a b<script>");
    assert_eq!(echoed.headers()["x-content-type-options"], "nosniff");
}

/// Proves the probes, the OpenAPI document, Swagger UI and Prometheus metrics are served.
#[tokio::test]
async fn probes_docs_and_metrics_are_served() {
    let service = TestService::start(TestBackend::Sqlite).await;
    let (status, live) = service.get_json("/live").await;
    assert_eq!((status, live["status"].as_str()), (200, Some("ok")));
    let (status, ready) = service.get_json("/ready").await;
    assert_eq!(status, 200, "{ready}");
    let (status, health) = service.get_json("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "up");
    let components: Vec<&str> = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        components,
        [
            "database",
            "sentiment_workers",
            "sentiment_engine",
            "job_runner"
        ]
    );
    assert_eq!(health["supervision"]["name"], "root");
    let subsystems: Vec<&str> = health["supervision"]["supervisors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|supervisor| supervisor["name"].as_str().unwrap())
        .collect();
    // With no provider configured and no RabbitMQ there is no providers or ingress subtree.
    assert_eq!(
        subsystems,
        [
            "sentiment",
            "jobs",
            "scheduler",
            "dead-letter",
            "retention",
            "control"
        ]
    );

    let (status, spec) = service.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/sentiment",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/live",
        "/ready",
        "/health",
        "/metrics",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} documented");
    }
    let docs = service
        .client
        .get(service.url("/docs"))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));

    service
        .post_json("/v1/sentiment", &json!({ "texts": ["fine"] }))
        .await;
    let metrics = service.get_text("/metrics").await;
    assert!(metrics.contains("bulwark_http_requests_total{route=\"analyze_sentiment\",method=\"POST\",status=\"200\"}"), "{metrics}");
    assert!(
        metrics.contains("bulwark_http_request_duration_seconds_bucket"),
        "histogram exported"
    );
    assert!(metrics.contains("bulwark_sentiment_texts_total"));
}

/// Proves every JSON body is read strictly: a number, a boolean or `null` where the document
/// says `string` (and a string where it says `integer`) is `422` naming the field, on the
/// sentiment, job (payloads of each kind included), audit, schedule and dead-letter bodies,
/// and nothing is stored; the same text sent as a string is scored.
#[tokio::test]
async fn coerced_values_are_refused_with_the_field_named() {
    let service = TestService::start_with(TestBackend::Sqlite, |config| {
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
    })
    .await;
    let sentiment = |payload: Value| json!({ "kind": "sentiment.analyze", "payload": payload });
    let complete = |params: Value| {
        json!({ "kind": "provider.complete",
            "payload": { "provider": "sim", "prompt": "best CRM?", "params": params } })
    };
    let audit = |field: &str, value: Value| {
        let mut body = json!({ "brand": "Acme", "prompts": ["best CRM?"], "providers": ["sim"] });
        body[field] = value;
        body
    };
    let cases = [
        ("/v1/sentiment", json!({ "texts": [42] }), "texts[0]:"),
        (
            "/v1/sentiment",
            json!({ "texts": ["a", true] }),
            "texts[1]:",
        ),
        ("/v1/sentiment", json!({ "texts": [null] }), "texts[0]:"),
        (
            "/v1/sentiment",
            json!({ "texts": ["a"], "strategy": null }),
            "strategy:",
        ),
        (
            "/v1/sentiment",
            json!({ "texts": ["a"], "strategy": 1 }),
            "strategy:",
        ),
        (
            "/v1/sentiment",
            json!({ "texts": ["a"], "neutral_threshold": "0.5" }),
            "neutral_threshold:",
        ),
        (
            "/v1/jobs",
            sentiment(json!({ "texts": [42] })),
            "payload.texts[0]:",
        ),
        (
            "/v1/jobs",
            json!({ "kind": "sentiment.analyze", "payload": { "texts": ["a"] }, "idempotency_key": 7 }),
            "idempotency_key:",
        ),
        (
            "/v1/jobs",
            complete(json!({ "max_tokens": "5" })),
            "payload.params.max_tokens:",
        ),
        (
            "/v1/jobs",
            complete(json!({ "max_tokens": 40_000 })),
            "payload.params.max_tokens:",
        ),
        (
            "/v1/jobs",
            complete(json!({ "seed": 1.5 })),
            "payload.params.seed:",
        ),
        ("/v1/audits", audit("brand", json!(5)), "brand:"),
        (
            "/v1/audits",
            audit("providers", json!([1])),
            "providers[0]:",
        ),
        (
            "/v1/audits",
            audit("samples_per_prompt", json!("2")),
            "samples_per_prompt:",
        ),
        (
            "/v1/audits",
            audit("samples_per_prompt", json!(2.5)),
            "samples_per_prompt:",
        ),
        (
            "/v1/schedules",
            json!({ "name": "n", "kind": "sentiment.analyze", "payload": { "texts": ["a"] },
                "trigger": { "type": "interval", "every_ms": "60000" } }),
            "trigger.every_ms:",
        ),
        ("/v1/dead-letters/requeue", json!({ "all": "true" }), "all:"),
        ("/v1/dead-letters/requeue", json!({ "limit": -1 }), "limit:"),
    ];
    for (path, body, field) in cases {
        let (status, response) = service.post_json(path, &body).await;
        assert_eq!(status, 422, "{path} {body}: {response}");
        assert_error_body(&response, "VALIDATION_FAILED", None);
        let message = response["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{path} {body}: {message}");
    }
    let (_, jobs) = service.get_json("/v1/jobs").await;
    assert_eq!(jobs["jobs"], json!([]), "nothing was stored");
    let (_, schedules) = service.get_json("/v1/schedules").await;
    assert_eq!(schedules["schedules"], json!([]), "nothing was stored");

    let (status, response) = service
        .post_json("/v1/sentiment", &json!({ "texts": ["42"] }))
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["results"].as_array().unwrap().len(), 1);
}

/// Proves a method a path does not document is `405` with an `Allow` header listing the
/// documented ones (and the error body), that unset optional fields are absent rather than
/// `null`, and that the served document closes request objects.
#[tokio::test]
async fn wrong_methods_get_405_with_allow() {
    let service = TestService::start_with(TestBackend::Sqlite, |config| {
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
    })
    .await;
    let cases = [
        (reqwest::Method::PUT, "/v1/sentiment", "POST"),
        (reqwest::Method::DELETE, "/v1/jobs", "GET, POST, HEAD"),
        (reqwest::Method::PATCH, "/v1/jobs/some-id", "GET, HEAD"),
        (reqwest::Method::GET, "/v1/dead-letters/requeue", "POST"),
        (reqwest::Method::POST, "/live", "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        let response = service
            .client
            .request(method.clone(), service.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(
            response.headers()["allow"].to_str().unwrap(),
            allow,
            "{method} {path}"
        );
        let body: Value = response.json().await.unwrap();
        assert_error_body(&body, "VALIDATION_FAILED", None);
    }

    let (status, job) = service
        .post_json(
            "/v1/jobs",
            &json!({ "kind": "sentiment.analyze", "payload": { "texts": ["fine"] } }),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    for absent in [
        "result",
        "error",
        "idempotency_key",
        "started_at",
        "finished_at",
    ] {
        assert!(
            job.get(absent).is_none(),
            "{absent} absent, not null: {job}"
        );
    }
    let (_, listed) = service.get_json("/v1/jobs").await;
    assert!(listed.get("next_cursor").is_none(), "{listed}");

    let (_, spec) = service.get_json("/openapi.json").await;
    let schemas = &spec["components"]["schemas"];
    assert_eq!(schemas["SentimentBody"]["additionalProperties"], false);
    assert_eq!(schemas["TriggerBody"]["additionalProperties"], false);
    assert!(schemas["JobView"].get("additionalProperties").is_none());
}
