//! AI-visibility audits end to end: the service on port 0, its providers pointed over real
//! loopback HTTP at `bulwark simulate-provider` processes (one speaking for an OpenAI-style
//! provider, one for an Anthropic-style one), the real sentiment pool and both databases.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bulwark_config::{Config, ProviderConfig, ProviderKind};
use bulwark_providers::CompletionRequest;
use bulwark_providers::simulated::{SimulatedEngine, SimulatedEngineParams};
use bulwark_store::testsuite::TestBackend;
use bulwark_test_support::eventually;
use common::TestService;
use serde_json::{Value, json};

/// A `bulwark simulate-provider` child process, killed when dropped.
struct Simulator {
    child: Child,
    base_url: String,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// Starts the simulator binary and waits until its admin endpoint answers.
async fn spawn_simulator() -> Simulator {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["simulate-provider", "--addr", &addr])
        .env("BULWARK_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bulwark simulate-provider starts");
    let simulator = Simulator {
        child,
        base_url: format!("http://{addr}"),
    };
    let client = reqwest::Client::new();
    let stats_url = format!("{}/admin/stats", simulator.base_url);
    eventually(Duration::from_secs(30), || async {
        let response = client.get(&stats_url).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    simulator
}

/// Sets the simulator's faults live through its admin endpoint.
async fn set_faults(simulator: &Simulator, faults: &Value) {
    let response = reqwest::Client::new()
        .put(format!("{}/admin/faults", simulator.base_url))
        .json(faults)
        .send()
        .await
        .expect("admin endpoint answers");
    assert!(response.status().is_success(), "faults accepted");
}

/// A provider of `kind` whose base URL is the simulator; short retries keep failures quick.
fn provider_at(kind: ProviderKind, simulator: &Simulator) -> ProviderConfig {
    ProviderConfig {
        kind,
        base_url: Some(format!("{}/v1", simulator.base_url)),
        allow_plain_http: true,
        max_attempts: 2,
        retry_base_ms: 10,
        retry_max_ms: 50,
        attempt_timeout_ms: 5_000,
        call_deadline_ms: 10_000,
        ..ProviderConfig::default()
    }
}

async fn start_service(
    backend: TestBackend,
    providers: Vec<(&str, ProviderConfig)>,
) -> TestService {
    TestService::start_with(backend, move |config: &mut Config| {
        for (name, provider) in providers {
            config.providers.insert(name.to_owned(), provider);
        }
        config.audits.concurrency = 4;
    })
    .await
}

/// Waits for the audit to reach a final status and returns it with its items.
async fn wait_for_audit(service: &TestService, audit_id: &str) -> Value {
    let path = format!("/v1/audits/{audit_id}");
    eventually(Duration::from_secs(60), || async {
        let (status, audit) = service.get_json(&path).await;
        assert_eq!(status, 200, "audit {audit_id} readable: {audit}");
        let done = matches!(
            audit["status"].as_str(),
            Some("succeeded" | "partial" | "failed")
        );
        done.then_some(audit)
    })
    .await
}

async fn get_text(service: &TestService, path: &str) -> (u16, String, String) {
    let response = service
        .client
        .get(service.url(path))
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.text().await.expect("body read"),
    )
}

fn as_f64(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is a number"))
}

/// Proves a full audit over two providers succeeds with every item answered, that each stored
/// answer is exactly what the simulator generates for that prompt and sample, that brand
/// detection agrees with what the simulator put in its answer, that the summary's numbers
/// follow from the items, and that the reports render (CSV parses, HTML has the chart).
async fn full_audit(backend: TestBackend) {
    let simulator = spawn_simulator().await;
    let service = start_service(
        backend,
        vec![
            ("gpt", provider_at(ProviderKind::Openai, &simulator)),
            ("claude", provider_at(ProviderKind::Anthropic, &simulator)),
        ],
    )
    .await;
    let prompts = [
        "What is the best crm for a small team?",
        "Which project tracker should a startup use?",
    ];
    let (status, created) = service
        .post_json(
            "/v1/audits",
            &json!({
                "brand": "Acme",
                "aliases": ["Acme Corp"],
                "competitors": ["Globex", "Initech", "Umbrella", "Hooli"],
                "prompts": prompts,
                "providers": ["gpt", "claude"],
                "samples_per_prompt": 3,
            }),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    // The runner may have claimed (or even finished) the job before the response was built.
    assert!(
        matches!(
            created["status"].as_str(),
            Some("queued" | "running" | "succeeded")
        ),
        "{created}"
    );
    assert_eq!(created["num_items"], 12);
    let audit_id = created["id"].as_str().expect("audit id").to_owned();

    let audit = wait_for_audit(&service, &audit_id).await;
    assert_eq!(audit["status"], "succeeded", "{audit}");
    assert!(audit["failures"].as_array().unwrap().is_empty());
    let items = audit["items"].as_array().expect("items");
    assert_eq!(items.len(), 12);

    let engine = SimulatedEngine::new(SimulatedEngineParams::default());
    let mut num_brand_answers = 0;
    for item in items {
        assert_eq!(item["status"], "answered", "{item}");
        let prompt_index = item["prompt_index"].as_u64().unwrap() as usize;
        let request = CompletionRequest {
            prompt: prompts[prompt_index].to_owned(),
            seed: Some(item["sample"].as_u64().unwrap()),
            ..CompletionRequest::default()
        };
        let expected = engine.answer(&request);
        assert_eq!(
            item["answer"],
            expected.text.as_str(),
            "item {}",
            item["item_index"]
        );
        let simulator_named_acme = expected.mentions.iter().any(|(brand, _)| brand == "Acme");
        assert_eq!(item["brand_mentioned"], simulator_named_acme, "{item}");
        if simulator_named_acme {
            num_brand_answers += 1;
            let rank = item["first_mention_rank"].as_u64().expect("a rank");
            let position = expected
                .mentions
                .iter()
                .position(|(brand, _)| brand == "Acme")
                .unwrap() as u64;
            // The simulator's lists rank in mention order and its prose names brands in that
            // order; every brand it can name here is the brand or a competitor, since the
            // prompts name none of their own.
            assert_eq!(rank, position + 1, "{item}");
            for mention in item["mentions"].as_array().unwrap() {
                if mention["is_brand"] == true {
                    let sentiment = as_f64(&mention["sentiment"]);
                    assert!((-1.0..=1.0).contains(&sentiment), "{mention}");
                    assert!(mention["sentence"].as_str().unwrap().contains("Acme"));
                }
            }
        }
    }
    let overall = &audit["summary"]["overall"];
    assert_eq!(overall["num_answers"], 12);
    assert_eq!(overall["num_failed"], 0);
    assert_eq!(overall["num_brand_answers"], num_brand_answers);
    let mention_rate = as_f64(&overall["mention_rate"]);
    assert!((mention_rate - f64::from(num_brand_answers) / 12.0).abs() < 1e-9);
    if num_brand_answers > 0 {
        let share = as_f64(&overall["share_of_voice"]);
        assert!(share > 0.0 && share <= 1.0, "{overall}");
        assert!(as_f64(&overall["average_first_mention_rank"]) >= 1.0);
    }
    let providers = audit["summary"]["providers"].as_array().unwrap();
    let names: Vec<&str> = providers
        .iter()
        .map(|block| block["provider"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gpt", "claude"]);
    let per_provider_answers: u64 = providers
        .iter()
        .map(|block| block["summary"]["num_answers"].as_u64().unwrap())
        .sum();
    assert_eq!(per_provider_answers, 12);

    // The job records its result just after the audit finishes.
    let job = service.wait_for_job(&audit_id).await;
    assert_eq!(job["kind"], "audit.run");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["status"], "succeeded");

    let (status, content_type, csv_text) =
        get_text(&service, &format!("/v1/audits/{audit_id}/report.csv")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers().expect("csv header").clone();
    let answer_column = headers.iter().position(|name| name == "answer").unwrap();
    let rows: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .expect("csv parses");
    assert_eq!(rows.len(), 12);
    assert_eq!(
        &rows[0][answer_column],
        items[0]["answer"].as_str().unwrap()
    );
    let (status, _, summary_csv) = get_text(
        &service,
        &format!("/v1/audits/{audit_id}/report.csv?view=summary"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        summary_csv.lines().count(),
        4,
        "header, gpt, claude, overall"
    );

    let (status, content_type, html) =
        get_text(&service, &format!("/v1/audits/{audit_id}/report.html")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(html.contains("<svg"));
    assert!(html.contains("<table>"));
    assert!(!html.contains("<script") && !html.contains("src="));
}

#[tokio::test]
async fn full_audit_on_sqlite() {
    full_audit(TestBackend::Sqlite).await;
}

#[tokio::test]
async fn full_audit_on_postgres() {
    full_audit(TestBackend::Postgres).await;
}

/// Proves an audit whose second provider fails on every call (the simulator set to answer
/// `500` through its admin endpoint) ends `partial`: every item of the healthy provider is
/// answered, every item of the failing one is listed as a failure with its error code, in the
/// JSON and both reports, and nothing is dropped.
#[tokio::test]
async fn partial_audit_lists_failures() {
    let healthy = spawn_simulator().await;
    let failing = spawn_simulator().await;
    set_faults(&failing, &json!({ "error_rate": 1.0 })).await;
    let service = start_service(
        TestBackend::Sqlite,
        vec![
            ("healthy", provider_at(ProviderKind::Openai, &healthy)),
            ("failing", provider_at(ProviderKind::Openai, &failing)),
        ],
    )
    .await;
    let (status, created) = service
        .post_json(
            "/v1/audits",
            &json!({
                "brand": "Acme",
                "competitors": ["Globex"],
                "prompts": ["Which CRM is best?", "Which tracker is cheapest?"],
                "providers": ["healthy", "failing"],
                "samples_per_prompt": 2,
            }),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let audit_id = created["id"].as_str().unwrap().to_owned();
    let audit = wait_for_audit(&service, &audit_id).await;
    assert_eq!(audit["status"], "partial", "{audit}");
    let failures = audit["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 4, "{audit}");
    for failure in failures {
        assert_eq!(failure["provider"], "failing");
        let code = failure["code"].as_str().unwrap();
        assert!(!code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        assert!(!failure["message"].as_str().unwrap().is_empty());
    }
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 8, "every item is recorded");
    let num_answered = items
        .iter()
        .filter(|item| item["status"] == "answered" && item["provider"] == "healthy")
        .count();
    assert_eq!(num_answered, 4);
    let overall = &audit["summary"]["overall"];
    assert_eq!(
        (
            overall["num_answers"].as_u64(),
            overall["num_failed"].as_u64()
        ),
        (Some(4), Some(4))
    );
    let failing_block = &audit["summary"]["providers"][1];
    assert_eq!(failing_block["provider"], "failing");
    assert_eq!(failing_block["summary"]["num_failed"], 4);
    assert_eq!(failing_block["summary"]["mention_rate"], 0.0);

    let first_code = failures[0]["code"].as_str().unwrap();
    let (_, _, csv_text) = get_text(&service, &format!("/v1/audits/{audit_id}/report.csv")).await;
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = |wanted: &str| headers.iter().position(|name| name == wanted).unwrap();
    let (status_column, code_column) = (column("status"), column("error_code"));
    let failed_rows = reader
        .records()
        .map(|row| row.expect("csv parses"))
        .filter(|row| &row[status_column] == "failed" && !row[code_column].is_empty())
        .count();
    assert_eq!(failed_rows, 4);
    let (_, _, html) = get_text(&service, &format!("/v1/audits/{audit_id}/report.html")).await;
    assert!(html.contains("Failed items (4)"));
    assert!(html.contains(first_code));

    let metrics = service.get_text("/metrics").await;
    let failed_series = metrics
        .lines()
        .find(|line| {
            line.starts_with("bulwark_audit_items_total{")
                && line.contains("provider=\"failing\"")
                && line.contains("outcome=\"failed\"")
        })
        .unwrap_or_else(|| panic!("failed items are counted:\n{metrics}"));
    assert!(failed_series.ends_with(" 4"), "{failed_series}");
}

/// Proves submitted text is HTML-escaped in the page: a `<script>` brand, an `&` alias and a
/// quoted prompt appear only escaped.
#[tokio::test]
async fn html_report_escapes_input() {
    let simulator = spawn_simulator().await;
    let service = start_service(
        TestBackend::Sqlite,
        vec![("gpt", provider_at(ProviderKind::Openai, &simulator))],
    )
    .await;
    let (status, created) = service
        .post_json(
            "/v1/audits",
            &json!({
                "brand": "<script>alert('x')</script>",
                "aliases": ["A&B"],
                "prompts": ["Is \"<b>bold</b>\" any good?"],
                "providers": ["gpt"],
            }),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let audit_id = created["id"].as_str().unwrap().to_owned();
    wait_for_audit(&service, &audit_id).await;
    let (status, _, html) = get_text(&service, &format!("/v1/audits/{audit_id}/report.html")).await;
    assert_eq!(status, 200);
    assert!(!html.contains("<script"), "the brand is escaped");
    assert!(!html.contains("<b>bold</b>"), "the prompt is escaped");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("A&amp;B"));
    assert!(html.contains("&quot;&lt;b&gt;bold&lt;/b&gt;&quot;"));
}

/// Proves bad input to every audit endpoint is refused with the documented status and the
/// field named, that nothing is stored for a refused audit, and that idempotency keys replay
/// the same audit and refuse a different one.
#[tokio::test]
async fn bad_input_is_refused() {
    let simulator = spawn_simulator().await;
    let service = start_service(
        TestBackend::Sqlite,
        vec![
            ("gpt", provider_at(ProviderKind::Openai, &simulator)),
            ("claude", provider_at(ProviderKind::Anthropic, &simulator)),
        ],
    )
    .await;
    let good = json!({
        "brand": "Acme",
        "competitors": ["Globex"],
        "prompts": ["Which CRM?"],
        "providers": ["gpt"],
    });
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let unprocessable = [
        (with("brand", json!("   ")), "brand:"),
        (with("brand", json!("x".repeat(201))), "brand:"),
        (with("providers", json!(["gemini"])), "providers[0]:"),
        (with("providers", json!([])), "providers:"),
        (with("prompts", json!([])), "prompts:"),
        (with("prompts", json!(["ok", ""])), "prompts[1]:"),
        (
            with("competitors", json!(["Globex", "globex"])),
            "competitors[1]:",
        ),
        (with("competitors", json!(["ACME"])), "competitors[0]:"),
        (with("samples_per_prompt", json!(0)), "samples_per_prompt:"),
        (with("samples_per_prompt", json!(11)), "samples_per_prompt:"),
        (with("idempotency_key", json!("")), "idempotency_key:"),
    ];
    // 100 prompts × 2 providers × 10 samples: each count within its bound, the product not.
    let mut too_many_items = with("prompts", json!(vec!["q"; 100]));
    too_many_items["providers"] = json!(["gpt", "claude"]);
    too_many_items["samples_per_prompt"] = json!(10);
    let unprocessable = unprocessable
        .into_iter()
        .chain([(too_many_items, "prompts:")]);
    for (body, prefix) in unprocessable {
        let (status, error) = service.post_json("/v1/audits", &body).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["code"], "VALIDATION_FAILED");
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with(prefix), "{prefix} vs {message}");
    }
    let malformed = [
        json!({ "prompts": ["q"], "providers": ["gpt"] }),
        with("colour", json!("red")),
        with("prompts", json!({ "first": "q" })),
        json!("not an object"),
    ];
    // A body of the wrong shape (missing or unknown field, wrong type) names the field too.
    for body in malformed {
        let (status, error) = service.post_json("/v1/audits", &body).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["code"], "VALIDATION_FAILED");
    }
    let (_, jobs) = service.get_json("/v1/jobs?kind=audit.run").await;
    assert!(
        jobs["jobs"].as_array().unwrap().is_empty(),
        "nothing stored"
    );

    let (status, error) = service
        .post_json(
            "/v1/jobs",
            &json!({ "kind": "audit.run", "payload": { "brand": "", "prompts": ["q"], "providers": ["gpt"] } }),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("payload.brand:")
    );

    let keyed = with("idempotency_key", json!("audit-key-1"));
    let (status, first) = service.post_json("/v1/audits", &keyed).await;
    assert_eq!(status, 202, "{first}");
    let (status, replay) = service.post_json("/v1/audits", &keyed).await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["id"], first["id"]);
    let mut different = keyed.clone();
    different["brand"] = json!("Globex Two");
    let (status, conflict) = service.post_json("/v1/audits", &different).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["code"], "CONFLICT");

    let (status, missing) = service.get_json("/v1/audits/no-such-audit").await;
    assert_eq!(status, 404);
    assert_eq!(missing["code"], "RESOURCE_NOT_FOUND");
    for path in [
        "/v1/audits/no-such-audit/report.csv",
        "/v1/audits/no-such-audit/report.html",
    ] {
        let (status, _, _) = get_text(&service, path).await;
        assert_eq!(status, 404, "{path}");
    }
    let audit_id = first["id"].as_str().unwrap();
    let (status, view_error) = service
        .get_json(&format!("/v1/audits/{audit_id}/report.csv?view=pie"))
        .await;
    assert_eq!(status, 422);
    assert!(view_error["message"].as_str().unwrap().starts_with("view:"));
    let (status, _) = service
        .get_json(&format!("/v1/audits/{audit_id}?include_items=maybe"))
        .await;
    assert_eq!(status, 422);
}
