//! Planted secrets: a node started with a provider key, a database password (in the URL's
//! userinfo and in its query string), a bootstrap admin key, a server secret and an operator
//! token runs a scenario that fails on purpose; no output of it shows any of them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_test_support::eventually;
use common::{TEST_ADMIN_KEY, client_with_key};
use serde_json::{Value, json};

const PROVIDER_KEY: &str = "sk-planted-provider-key-93b1";
const DATABASE_PASSWORD: &str = "planted-db-password-4e7c";
const QUERY_PASSWORD: &str = "planted-query-password-a21f";
const AUTH_SECRET: &str = "planted-auth-secret-6d05";
const OPERATOR_TOKEN: &str = "planted-operator-token-c8e2";
const PANIC_MARKER: &str = "chaos-panic-planted-7a";

fn planted() -> [&'static str; 6] {
    [
        PROVIDER_KEY,
        DATABASE_PASSWORD,
        QUERY_PASSWORD,
        AUTH_SECRET,
        OPERATOR_TOKEN,
        TEST_ADMIN_KEY,
    ]
}

/// Returns the PostgreSQL URL with a password in its userinfo and a secret query parameter
/// (the test server trusts every connection, so both are accepted and ignored).
fn url_with_passwords(url: &str) -> String {
    let with_password = url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{DATABASE_PASSWORD}@"),
        1,
    );
    format!("{with_password}&sslpassword={QUERY_PASSWORD}")
}

fn write_config(dir: &Path, dead_provider: &str) -> PathBuf {
    let path = dir.join("bulwark.toml");
    let contents = format!(
        r#"
[sentiment]
engine = "lexicon"
workers = 1

[jobs]
poll_interval_ms = 20
max_attempts = 1
retry_backoff_ms = 10

[incidents]
dir = "{incidents}"
payload_mode = "full"
env_allow = ["PATH", "DATABASE_URL", "OPENAI_API_KEY", "BULWARK_AUTH_SECRET",
             "BULWARK_BOOTSTRAP_ADMIN_KEY", "BULWARK_OPERATOR_TOKEN"]

[chaos]
panic_on_text = "{PANIC_MARKER}"

[auth]
secret = {{ env = "BULWARK_AUTH_SECRET" }}
open_endpoints = ["docs"]

[providers.dead]
kind = "openai"
base_url = "{dead_provider}"
allow_plain_http = true
api_key = {{ env = "OPENAI_API_KEY" }}
max_attempts = 1
connect_timeout_ms = 200
"#,
        incidents = dir.join("incidents").display(),
    );
    std::fs::write(&path, contents).expect("config written");
    path
}

fn with_planted_env<'a>(command: &'a mut Command, database_url: &str) -> &'a mut Command {
    command
        .env("DATABASE_URL", database_url)
        .env("OPENAI_API_KEY", PROVIDER_KEY)
        .env("BULWARK_AUTH_SECRET", AUTH_SECRET)
        .env("BULWARK_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("BULWARK_LOG", "debug")
}

/// GETs `url` and returns its JSON body; `None` when it cannot (polled again).
async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// Returns every place in `text` where a planted secret shows, named.
fn hits(source: &str, text: &str) -> Vec<String> {
    planted()
        .into_iter()
        .filter(|secret| text.contains(secret))
        .map(|secret| format!("{source} shows {secret}"))
        .collect()
}

/// Proves no planted secret appears in the process log, the incident files, any API response
/// of the scenario (every list and detail, error bodies, `/health`, `/metrics`,
/// `/openapi.json`, `/v1/keys`) or `bulwark config check`, after a provider call that fails,
/// a worker panic, refused keys, malformed bodies and unknown routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_never_leave_the_process() {
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let database_url = url_with_passwords(&database.url);
    let dir = std::env::temp_dir().join(format!("bulwark-secrets-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    let dead_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let dead_provider = format!("http://{}/v1", dead_listener.local_addr().unwrap());
    drop(dead_listener);
    let config_file = write_config(&dir, &dead_provider);

    let mut serve = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    serve
        .arg("--config")
        .arg(&config_file)
        .arg("serve")
        .env("BULWARK_HTTP_ADDR", "127.0.0.1:0");
    let served = common::serve(with_planted_env(&mut serve, &database_url));
    let base = served.base_url.clone();
    let admin = client_with_key(TEST_ADMIN_KEY);
    let anonymous = reqwest::Client::new();
    let mut outputs: Vec<(String, String)> = Vec::new();

    let job: Value = admin
        .post(format!("{base}/v1/jobs"))
        .json(
            &json!({"kind": "provider.complete", "payload": {"provider": "dead", "prompt": "hi"}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = job["id"].as_str().expect("job accepted").to_owned();
    eventually(Duration::from_secs(30), || async {
        let job = get_json(&admin, &format!("{base}/v1/jobs/{job_id}")).await?;
        matches!(job["status"].as_str(), Some("failed" | "dead")).then_some(())
    })
    .await;
    let panicked = admin
        .post(format!("{base}/v1/sentiment"))
        .json(&json!({"texts": [PANIC_MARKER]}))
        .send()
        .await
        .unwrap();
    outputs.push((
        "panicking request".to_owned(),
        panicked.text().await.unwrap(),
    ));
    let failures = [
        anonymous
            .get(format!("{base}/v1/jobs"))
            .bearer_auth(OPERATOR_TOKEN.to_uppercase()),
        anonymous
            .get(format!("{base}/v1/jobs"))
            .bearer_auth("bwk_wrong"),
        admin.post(format!("{base}/v1/jobs")).body("{not json"),
        admin.get(format!("{base}/v1/nowhere")),
        admin.delete(format!("{base}/v1/jobs")),
    ];
    for (index, request) in failures.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        outputs.push((format!("failure {index}"), response.text().await.unwrap()));
    }
    let incidents_dir = dir.join("incidents");
    let incidents: Value = eventually(Duration::from_secs(20), || async {
        let incidents = get_json(&admin, &format!("{base}/v1/incidents")).await?;
        let listed = incidents["incidents"]
            .as_array()
            .is_some_and(|list| !list.is_empty());
        listed.then_some(incidents)
    })
    .await;

    let mut paths = vec![
        "/v1/jobs".to_owned(),
        format!("/v1/jobs/{job_id}"),
        "/v1/dead-letters".to_owned(),
        "/v1/dead-letters/stats".to_owned(),
        "/v1/incidents".to_owned(),
        "/v1/keys".to_owned(),
        "/v1/schedules".to_owned(),
        "/v1/ops/supervisors".to_owned(),
        "/health".to_owned(),
        "/ready".to_owned(),
        "/metrics".to_owned(),
        "/openapi.json".to_owned(),
    ];
    for incident in incidents["incidents"].as_array().expect("incidents listed") {
        paths.push(format!(
            "/v1/incidents/{}",
            incident["id"].as_str().unwrap()
        ));
    }
    assert!(paths.len() > 12, "the panic left an incident to read");
    for path in &paths {
        let response = admin.get(format!("{base}{path}")).send().await.unwrap();
        outputs.push((path.clone(), response.text().await.unwrap()));
    }

    let mut child = served.child;
    let _ = child.kill();
    let _ = child.wait();
    let logs = served
        .logs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .join("\n");
    assert!(logs.contains("request finished"), "the log was collected");
    outputs.push(("process log".to_owned(), logs));
    for entry in std::fs::read_dir(&incidents_dir).expect("incidents written") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        outputs.push((path.display().to_string(), text));
    }
    let mut check = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    check
        .arg("--config")
        .arg(&config_file)
        .args(["config", "check"]);
    let checked = with_planted_env(&mut check, &database_url)
        .output()
        .expect("config check runs");
    assert!(checked.status.success(), "{checked:?}");
    outputs.push((
        "config check".to_owned(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        ),
    ));

    let found: Vec<String> = outputs
        .iter()
        .flat_map(|(source, text)| hits(source, text))
        .collect();
    assert!(found.is_empty(), "planted secrets leaked: {found:#?}");
    assert!(outputs.len() >= 20, "{} outputs read", outputs.len());
}
