//! Crash isolation, incident files, replay and operator controls, against the real service:
//! in process for the sentiment and jobs subsystems (chaos markers crash or hang a real
//! inference thread on a real input), and on the real binary where the environment matters
//! (secrets in the process environment, the operator token).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bulwark_store::testsuite::TestBackend;
use bulwark_test_support::eventually;
use common::TestService;
use serde_json::{Value, json};

const PANIC_MARKER: &str = "__chaos_panic__";
const HANG_MARKER: &str = "__chaos_hang__";

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bulwark-incidents-{test}-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn incident_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| {
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    name.starts_with("incident_") && name.ends_with(".json")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn schema_validator() -> jsonschema::Validator {
    let schema_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas/incident_v1.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(schema_path).expect("schema file"))
        .expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, incident: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(incident)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "incident invalid: {errors:?}\n{incident:#}"
    );
}

async fn start_chaos_service(backend: TestBackend, dir: &Path) -> TestService {
    let dir = dir.to_path_buf();
    TestService::start_with(backend, move |config| {
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
        config.sentiment.call_timeout_ms = 1_000;
        config.supervision.hang_timeout_ms = 300;
        config.jobs.max_attempts = 2;
        config.incidents.dir = dir.display().to_string();
        config.incidents.payload_mode = "full".to_owned();
        config.chaos.panic_on_text = Some(PANIC_MARKER.to_owned());
        config.chaos.hang_on_text = Some(HANG_MARKER.to_owned());
    })
    .await
}

async fn submit(service: &TestService, text: &str) -> String {
    let (status, job) = service
        .post_json(
            "/v1/jobs",
            &json!({"kind": "sentiment.analyze", "payload": {"texts": [text]}}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().expect("job id").to_owned()
}

/// Waits for an incident of `kind` to be listed by the API and returns it in full.
async fn wait_for_incident(service: &TestService, kind: &str) -> Value {
    let summary = eventually(Duration::from_secs(15), || async {
        let (status, list) = service
            .get_json(&format!("/v1/incidents?kind={kind}"))
            .await;
        assert_eq!(status, 200, "{list}");
        list["incidents"]
            .as_array()
            .and_then(|incidents| incidents.first().cloned())
    })
    .await;
    let id = summary["id"].as_str().expect("incident id");
    let (status, incident) = service.get_json(&format!("/v1/incidents/{id}")).await;
    assert_eq!(status, 200, "{incident}");
    incident
}

/// Proves a sentiment worker that panics on one input is isolated: the other jobs in flight
/// succeed, the pool serves on, the poisoned job is retried and ends `dead` (never lost), the
/// supervisor counts a panic, and the incident names the worker, its supervisor's strategy,
/// the batch being scored with its texts, carries the panic's backtrace, and is valid against
/// the schema.
#[tokio::test]
async fn sentiment_panic_is_isolated_and_dumped() {
    let dir = temp_dir("panic");
    let service = start_chaos_service(TestBackend::Sqlite, &dir).await;
    let mut healthy = Vec::new();
    for index in 0..10 {
        healthy.push(submit(&service, &format!("a lovely day number {index}")).await);
    }
    let poisoned = submit(&service, &format!("this one {PANIC_MARKER} crashes")).await;
    for job_id in &healthy {
        let job = service.wait_for_job(job_id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let job = service.wait_for_job(&poisoned).await;
    assert_eq!(job["status"], "dead", "{job}");
    assert_eq!(job["attempts"], 2, "retried before giving up: {job}");

    // The poisoned text may have crashed both workers (once in its batch, once alone); the pool
    // serves again as soon as one of them is restarted.
    let scores = eventually(Duration::from_secs(10), || async {
        let (status, scores) = service
            .post_json("/v1/sentiment", &json!({"texts": ["still serving"]}))
            .await;
        (status == 200).then_some(scores)
    })
    .await;
    assert_eq!(
        scores["results"].as_array().map(Vec::len),
        Some(1),
        "{scores}"
    );

    let incident = wait_for_incident(&service, "panic").await;
    assert_valid(&schema_validator(), &incident);
    assert!(
        incident["actor"]["path"]
            .as_str()
            .unwrap()
            .starts_with("root/sentiment/sentiment-worker-"),
        "{incident}"
    );
    assert_eq!(incident["actor"]["subsystem"], "sentiment");
    assert_eq!(incident["actor"]["supervisor"]["strategy"], "one_for_one");
    assert_eq!(incident["message"]["type"], "sentiment.batch");
    assert!(
        incident["message"]["payload"]
            .as_str()
            .unwrap()
            .contains(PANIC_MARKER)
    );
    assert!(incident["failure"]["backtrace"].as_str().is_some());
    assert_eq!(incident["process"]["pid"], std::process::id());
    assert!(!incident_files(&dir).is_empty());
    let metrics = service.get_text("/metrics").await;
    assert!(
        metrics.contains("bulwark_incidents_total{kind=\"panic\",subsystem=\"sentiment\"}"),
        "{metrics}"
    );
    service.service.shutdown().await.expect("shutdown");
}

/// Proves a hang on the inference thread is detected, the worker killed and restarted, the
/// hung job retried and ended `dead` (never lost), other jobs still succeed, and the incident
/// is a `hang` naming the batch it hung on.
#[tokio::test]
async fn sentiment_hang_is_killed_and_dumped() {
    let dir = temp_dir("hang");
    let service = start_chaos_service(TestBackend::Sqlite, &dir).await;
    let hung = submit(&service, &format!("this one {HANG_MARKER} hangs")).await;
    let mut healthy = Vec::new();
    for index in 0..5 {
        healthy.push(submit(&service, &format!("a fine evening {index}")).await);
    }
    for job_id in &healthy {
        let job = service.wait_for_job(job_id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let job = service.wait_for_job(&hung).await;
    assert_eq!(job["status"], "dead", "{job}");
    let incident = wait_for_incident(&service, "hang").await;
    assert_valid(&schema_validator(), &incident);
    assert_eq!(incident["message"]["type"], "sentiment.batch");
    assert!(
        incident["message"]["payload"]
            .as_str()
            .unwrap()
            .contains(HANG_MARKER)
    );
    let (status, health) = service.get_json("/health").await;
    assert!(status == 200 || status == 503, "{health}");
    service.service.shutdown().await.expect("shutdown");
}

/// Proves a job runner killed mid-batch is restarted by the jobs supervisor without losing the
/// jobs it was running (their tasks and leases outlive it), and is dumped as an `error`.
#[tokio::test]
async fn job_runner_failure_loses_no_job() {
    let dir = temp_dir("runner");
    let service = start_chaos_service(TestBackend::Sqlite, &dir).await;
    let mut jobs = Vec::new();
    for index in 0..20 {
        jobs.push(submit(&service, &format!("steady as she goes {index}")).await);
    }
    // Kill the runner from outside mid-batch, as a crash of its task would.
    let runner =
        ractor::registry::where_is(service.service.job_runner.name()).expect("runner registered");
    runner.kill();
    eventually(Duration::from_secs(10), || async {
        let registered = ractor::registry::where_is(service.service.job_runner.name());
        registered.filter(|cell| cell.get_id() != runner.get_id())
    })
    .await;
    for job_id in &jobs {
        let job = service.wait_for_job(job_id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let incident = wait_for_incident(&service, "error").await;
    assert_valid(&schema_validator(), &incident);
    assert_eq!(incident["actor"]["path"], "root/jobs/job-runner");
    service.service.shutdown().await.expect("shutdown");
}

/// Proves the incident directory stays bounded: with `max_files = 3`, many crashes leave at
/// most three files, the newest.
#[tokio::test]
async fn incident_directory_is_bounded() {
    let dir = temp_dir("bounded");
    let bounded_dir = dir.clone();
    let service = TestService::start_with(TestBackend::Sqlite, move |config| {
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
        config.sentiment.workers = 1;
        config.supervision.max_restarts = 100;
        config.incidents.dir = bounded_dir.display().to_string();
        config.incidents.max_files = 3;
        config.chaos.panic_on_text = Some(PANIC_MARKER.to_owned());
    })
    .await;
    for _ in 0..6 {
        let (status, _) = service
            .post_json("/v1/sentiment", &json!({"texts": [PANIC_MARKER]}))
            .await;
        assert!(status >= 500);
        eventually(Duration::from_secs(10), || async {
            (service.service.sentiment.num_running_workers() == 1).then_some(())
        })
        .await;
    }
    eventually(Duration::from_secs(10), || async {
        let written = service
            .service
            .incidents()
            .stats()
            .written
            .load(std::sync::atomic::Ordering::Relaxed);
        (written >= 6).then_some(())
    })
    .await;
    let files = incident_files(&dir);
    assert_eq!(files.len(), 3, "{files:?}");
    service.service.shutdown().await.expect("shutdown");
}

/// Starts `bulwark serve` with a config file and extra environment; returns the child and its
/// base URL.
fn spawn_bulwark(config_file: &Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    command
        .args(["--config"])
        .arg(config_file)
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env("BULWARK_HTTP_ADDR", "127.0.0.1:0");
    for (key, value) in env {
        command.env(key, value);
    }
    let served = common::serve(&mut command);
    (served.child, served.base_url)
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("bulwark.toml");
    let contents = format!(
        r#"
[database]
url = "sqlite://{db}"

[jobs]
poll_interval_ms = 20
concurrency = 4

[sentiment]
engine = "lexicon"
workers = 2

[incidents]
dir = "{incidents}"
payload_mode = "full"
env_allow = ["PATH", "OPENAI_API_KEY", "MY_SERVICE_URL", "BULWARK_OPERATOR_TOKEN"]

[chaos]
panic_on_text = "{PANIC_MARKER}"
{extra}
"#,
        db = dir.join("bulwark.db").display(),
        incidents = dir.join("incidents").display(),
    );
    std::fs::write(&path, contents).expect("config written");
    path
}

fn stop(mut child: std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

/// Proves, on the real binary, that a dump holds no secret from the process environment
/// (allow-listed secret names redacted, URL passwords removed, other variables absent), that
/// it is valid against the schema and carries the last log lines, and that `incident replay`
/// reproduces the crash in a sandbox process (exit 1) and says so when it does not (exit 0).
#[tokio::test]
async fn dump_holds_no_secret_and_replay_reproduces() {
    let dir = temp_dir("binary");
    let config_file = write_config(&dir, "");
    let secrets = [
        ("OPENAI_API_KEY", "sk-test-secret-7f3a9"),
        (
            "MY_SERVICE_URL",
            "https://svc:url-secret-51c2@example.internal/x",
        ),
        ("NOT_ALLOWED_VARIABLE", "not-allowed-secret-88d1"),
        ("BULWARK_OPERATOR_TOKEN", "operator-secret-0c4e"),
    ];
    let (child, base_url) = spawn_bulwark(&config_file, &secrets);
    let client = common::admin_client();
    let response = client
        .post(format!("{base_url}/v1/sentiment"))
        .header("x-request-id", "replay-test-1")
        .json(&json!({"texts": [format!("boom {PANIC_MARKER}")]}))
        .send()
        .await
        .expect("request sent");
    assert!(response.status().is_server_error());
    let incidents_dir = dir.join("incidents");
    let file = eventually(Duration::from_secs(15), || async {
        incident_files(&incidents_dir)
            .into_iter()
            .find(|path| path.to_string_lossy().contains("sentiment-worker-"))
    })
    .await;
    // The request that met the crash answered 500: an API incident names its request id.
    eventually(Duration::from_secs(15), || async {
        incident_files(&incidents_dir)
            .into_iter()
            .find(|path| path.to_string_lossy().ends_with("_replay-test-1.json"))
    })
    .await;
    stop(child);
    let text = std::fs::read_to_string(&file).expect("incident readable");
    for (_, secret) in &secrets {
        assert!(
            !text.contains(secret),
            "secret leaked into {}",
            file.display()
        );
    }
    for redacted_part in ["url-secret", "sk-test"] {
        assert!(!text.contains(redacted_part));
    }
    let incident: Value = serde_json::from_str(&text).expect("incident is JSON");
    assert_valid(&schema_validator(), &incident);
    assert_eq!(incident["environment"]["OPENAI_API_KEY"], "[redacted]");
    assert_eq!(
        incident["environment"]["MY_SERVICE_URL"],
        "https://svc:***@example.internal/x"
    );
    assert!(
        incident["environment"]
            .get("NOT_ALLOWED_VARIABLE")
            .is_none()
    );
    assert!(
        !incident["logs"].as_array().unwrap().is_empty(),
        "log ring filled"
    );
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.contains("sentiment-worker-"), "{name}");
    assert_eq!(
        incident["request_id"], "replay-test-1",
        "the worker's dump names the request whose text crashed it: {incident}"
    );
    assert!(
        name.contains(&format!("_{}", incident["process"]["pid"])),
        "{name}"
    );

    let replay = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .arg("--config")
        .arg(&config_file)
        .args(["incident", "replay"])
        .arg(&file)
        .env_remove("DATABASE_URL")
        .output()
        .expect("replay runs");
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(1), "reproduced: {stdout}");
    assert!(stdout.contains("\"reproduced\""), "{stdout}");

    // Without the chaos marker the same input is handled: not reproduced.
    let calm_config = dir.join("calm.toml");
    let calm = std::fs::read_to_string(&config_file)
        .unwrap()
        .replace(&format!("panic_on_text = \"{PANIC_MARKER}\""), "");
    std::fs::write(&calm_config, calm).unwrap();
    let replay = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .arg("--config")
        .arg(&calm_config)
        .args(["incident", "replay"])
        .arg(&file)
        .env_remove("DATABASE_URL")
        .output()
        .expect("replay runs");
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(0), "not reproduced: {stdout}");
    assert!(stdout.contains("not_reproduced"), "{stdout}");
}

/// Proves the operator endpoints on the real binary: `401` without a key or with an unknown
/// one, `403` (audited as denied) with a key lacking the `operate` scope (standard error
/// body), the deprecated operator token still working as an `operate` key, the live tree with
/// strategies and counters, and that a graceful restart of the jobs subtree under load loses
/// no job; every action is in `ops_audit_log` under the acting key's name.
#[tokio::test]
async fn operator_controls_and_jobs_restart_under_load() {
    let dir = temp_dir("ops");
    let config_file = write_config(&dir, "");
    let token = "operator-token-5d7e";
    let (child, base_url) = spawn_bulwark(&config_file, &[("BULWARK_OPERATOR_TOKEN", token)]);
    let client = common::admin_client();
    let anonymous = reqwest::Client::new();

    let unauthorized = anonymous
        .get(format!("{base_url}/v1/ops/supervisors"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let body: Value = unauthorized.json().await.unwrap();
    assert_eq!(body["code"], "UNAUTHORIZED");
    assert!(body["request_id"].is_string());
    let unknown = anonymous
        .post(format!("{base_url}/v1/ops/supervisors/root.jobs/restart"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    let reader: Value = client
        .post(format!("{base_url}/v1/keys"))
        .json(&json!({"name": "reader", "scopes": ["read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reader_token = reader["token"].as_str().expect("a token is issued");
    let forbidden = anonymous
        .post(format!("{base_url}/v1/ops/supervisors/root.jobs/restart"))
        .bearer_auth(reader_token)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    assert_eq!(
        forbidden.json::<Value>().await.unwrap()["code"],
        "FORBIDDEN"
    );

    let tree: Value = anonymous
        .get(format!("{base_url}/v1/ops/supervisors"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tree["name"], "root");
    let jobs_node = tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|child| child["name"] == "jobs")
        .expect("jobs subtree");
    assert_eq!(jobs_node["status"], "running");
    assert!(jobs_node["supervisor"]["strategy"].is_string());

    let mut job_ids = Vec::new();
    for index in 0..60 {
        let job: Value = client
            .post(format!("{base_url}/v1/jobs"))
            .json(&json!({"kind": "sentiment.analyze", "payload": {"texts": [format!("a good thing {index}")]}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        job_ids.push(job["id"].as_str().unwrap().to_owned());
    }
    let restarted = anonymous
        .post(format!("{base_url}/v1/ops/supervisors/root.jobs/restart"))
        .bearer_auth(token)
        .header("x-operator", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(restarted.status(), 200);
    let restarted: Value = restarted.json().await.unwrap();
    assert_eq!(restarted["outcome"], "succeeded");
    for job_id in &job_ids {
        let job = eventually(Duration::from_secs(30), || async {
            let job: Value = client
                .get(format!("{base_url}/v1/jobs/{job_id}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "dead")
            )
            .then_some(job)
        })
        .await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }

    // The CLI mirrors the API, with the key from the environment.
    let ops = |args: &[&str], token: &str| {
        Command::new(env!("CARGO_BIN_EXE_bulwark"))
            .arg("--config")
            .arg(&config_file)
            .args(["ops", "--url", &base_url])
            .args(args)
            .env("BULWARK_API_KEY", token)
            .env_remove("BULWARK_OPERATOR_TOKEN")
            .env_remove("DATABASE_URL")
            .output()
            .expect("bulwark ops runs")
    };
    let tree = ops(&["tree"], token);
    assert!(tree.status.success(), "{tree:?}");
    assert!(String::from_utf8_lossy(&tree.stdout).contains("sentiment-worker-1"));
    let stopped = ops(&["stop", "root/sentiment/sentiment-worker-1"], token);
    assert!(stopped.status.success(), "{stopped:?}");
    let started = ops(&["start", "root/sentiment/sentiment-worker-1"], token);
    assert!(started.status.success(), "{started:?}");
    let refused = ops(&["restart", "root/jobs"], reader_token);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("FORBIDDEN"));
    stop(child);

    let store = bulwark_store::Store::open(&bulwark_store::StoreParams {
        url: format!("sqlite://{}", dir.join("bulwark.db").display()),
        max_connections: 1,
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .expect("store opens");
    let actions = store.list_ops_actions(50).await.expect("audit log");
    assert!(
        actions
            .iter()
            .any(|entry| entry.actor == "key:legacy-operator-token"
                && entry.action == "restart"
                && entry.target == "root/jobs"
                && entry.outcome == "succeeded")
    );
    assert!(
        actions
            .iter()
            .any(|entry| entry.actor == "key:reader" && entry.outcome == "denied"),
        "{actions:?}"
    );
    assert!(actions.iter().any(|entry| entry.action == "stop"
        && entry.target == "root/sentiment/sentiment-worker-1"
        && entry.outcome == "succeeded"));
    store.close().await;
}
