//! Helpers shared by the integration tests: a service booted on port 0 against an isolated
//! database, an HTTP client, and `bulwark serve` processes; polling with a deadline is
//! `bulwark_test_support::eventually`.

#![allow(dead_code)]

pub mod broker;

use std::time::Duration;

use bulwark::Service;
use bulwark_config::Config;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_test_support::eventually;
use serde_json::Value;

/// The bootstrap admin key every `bulwark serve` process of the tests is started with
/// ([`serve_command`]); a test-only token, never used outside them.
pub const TEST_ADMIN_KEY: &str = "bwk_TestOnlyAdminKey0123456789abcdefghijklmnopq";

/// A service running in this process on a free port, with its own database.
pub struct TestService {
    pub service: Service,
    pub base_url: String,
    /// Sends the admin key of [`TestService::admin_key`] with every request.
    pub client: reqwest::Client,
    /// An `admin` key made on the service's database at start.
    pub admin_key: String,
    pub database: TestDatabase,
}

/// Writes `secret` to a fresh file readable only by its owner and returns its path, for
/// `{ file = … }` secret references.
pub fn write_secret_file(secret: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("bulwark-secret-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("secret folder created");
    let path = dir.join("secret");
    std::fs::write(&path, secret).expect("secret written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .expect("secret made private");
    path.display().to_string()
}

/// Sends SIGTERM to a `bulwark` child process.
pub fn send_sigterm(child: &std::process::Child) {
    use nix::sys::signal::{Signal, kill};
    kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .expect("SIGTERM sent");
}

/// Waits, off the async runtime, for a child process to exit.
pub async fn wait_for_exit(mut child: std::process::Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("the wait task ran")
        .expect("the child was waited for")
}

/// Returns an HTTP client that sends `key` as `Authorization: Bearer` with every request.
pub fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
        .expect("a key is a valid header value");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("http client builds")
}

/// Returns a client with the admin key of the `bulwark serve` processes of the tests.
pub fn admin_client() -> reqwest::Client {
    client_with_key(TEST_ADMIN_KEY)
}

/// Returns a config for tests: port 0, fast polling, short timeouts.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::default();
    config.http.addr = "127.0.0.1:0".to_owned();
    config.database.url = bulwark_config::SecretUrl::new(database_url);
    config.jobs.poll_interval_ms = 50;
    config.jobs.lease_ms = 5_000;
    config.jobs.retry_backoff_ms = 50;
    config.jobs.retry_backoff_max_ms = 200;
    config.sentiment.workers = 2;
    config.shutdown.timeout_ms = 5_000;
    config.supervision.heartbeat_ms = 50;
    config
}

impl TestService {
    /// Boots a service on a fresh database of `backend`.
    pub async fn start(backend: TestBackend) -> TestService {
        TestService::start_with(backend, |_| {}).await
    }

    /// Boots a service after `adjust` has changed the test config.
    pub async fn start_with(backend: TestBackend, adjust: impl FnOnce(&mut Config)) -> TestService {
        let database = TestDatabase::create(backend).await;
        let mut config = test_config(&database.url);
        adjust(&mut config);
        let service = Service::start(&config).await.expect("service starts");
        TestService::around(service, database).await
    }

    /// Wraps an already started service, with an `admin` key made on its database.
    pub async fn around(service: Service, database: TestDatabase) -> TestService {
        let base_url = format!("http://{}", service.addr);
        let admin_key = service
            .auth
            .authenticator
            .create_key(&bulwark_auth::NewKey {
                name: "tests".to_owned(),
                scopes: bulwark_auth::Scopes::new(&[bulwark_auth::Scope::Admin]),
                expires_at_ms: None,
                daily_provider_calls: None,
            })
            .await
            .expect("the test admin key is made")
            .token;
        TestService {
            service,
            base_url,
            client: client_with_key(&admin_key),
            admin_key,
            database,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// POSTs JSON and returns status and parsed body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs a path and returns status and parsed body (`Null` if not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs a path and returns its body as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        response.text().await.expect("body read")
    }

    /// Waits until the job reaches a terminal status and returns it.
    pub async fn wait_for_job(&self, job_id: &str) -> Value {
        let path = format!("/v1/jobs/{job_id}");
        eventually(Duration::from_secs(20), || async {
            let (status, job) = self.get_json(&path).await;
            assert_eq!(status, 200, "job {job_id} readable: {job}");
            let terminal = matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "dead" | "cancelled")
            );
            terminal.then_some(job)
        })
        .await
    }
}

/// Returns a `bulwark serve` command on port 0 over `database_url`, logging at info, on the
/// lexicon engine (these tests are about the process, not the model); callers add their own
/// settings and pass it to [`serve`].
pub fn serve_command(database_url: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bulwark"));
    command
        .arg("serve")
        .env("BULWARK_HTTP_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", database_url)
        .env("BULWARK_LOG", "info")
        .env("BULWARK__SENTIMENT__ENGINE", "lexicon");
    command
}

/// A started `bulwark serve` process: the child, its base URL, and every line it has logged.
pub struct Served {
    pub child: std::process::Child,
    pub base_url: String,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Starts `command` (a `bulwark … serve` command) with JSON logs on stderr and waits for its
/// "bulwark is serving" line; the log lines keep being collected afterwards. The process gets
/// [`TEST_ADMIN_KEY`] as its bootstrap admin key.
pub fn serve(command: &mut std::process::Command) -> Served {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};

    let mut child = command
        .env("BULWARK_LOG_FORMAT", "json")
        .env("BULWARK_BOOTSTRAP_ADMIN_KEY", TEST_ADMIN_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bulwark binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let collected = logs.clone();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(entry) = serde_json::from_str::<Value>(&line)
                && entry["message"] == "bulwark is serving"
            {
                let _ = addr_tx.send(entry["addr"].as_str().unwrap_or_default().to_owned());
            }
            collected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(line);
        }
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("bulwark reports its address");
    Served {
        child,
        base_url: format!("http://{addr}"),
        logs,
    }
}

/// What carries a test's jobs: the local queue on SQLite or PostgreSQL, or RabbitMQ (jobs
/// stored in PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    LocalSqlite,
    LocalPostgres,
    Amqp,
}

impl Transport {
    pub const ALL: [Transport; 3] = [
        Transport::LocalSqlite,
        Transport::LocalPostgres,
        Transport::Amqp,
    ];

    /// Boots a node of this transport after `adjust` changed the test config; returns it and
    /// the broker namespace to delete afterwards (with [`broker::delete_namespace`]).
    pub async fn start(
        self,
        adjust: impl FnOnce(&mut Config) + Send + 'static,
    ) -> (TestService, Option<String>) {
        match self {
            Transport::LocalSqlite => (
                TestService::start_with(TestBackend::Sqlite, adjust).await,
                None,
            ),
            Transport::LocalPostgres => (
                TestService::start_with(TestBackend::Postgres, adjust).await,
                None,
            ),
            Transport::Amqp => {
                let namespace = broker::unique_namespace();
                let broker_settings = broker::amqp_config(&namespace);
                let service = TestService::start_with(TestBackend::Postgres, move |config| {
                    adjust(config);
                    broker_settings(config);
                })
                .await;
                (service, Some(namespace))
            }
        }
    }
}
