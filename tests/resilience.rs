//! Dependencies failing under a running service, and several nodes sharing one database.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark::Service;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_test_support::eventually;
use common::{TestService, test_config};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy in front of PostgreSQL that a test can cut and restore, to make the database
/// unreachable from the service without touching the server itself.
struct CuttableProxy {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl CuttableProxy {
    async fn start(target: SocketAddr) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = CuttableProxy {
            addr: listener.local_addr().unwrap(),
            target,
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let tasks = self.tasks.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(connection);
            }
        });
        self.tasks.lock().unwrap().push(acceptor);
    }

    /// Closes the listener and every proxied connection.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same port.
    async fn restore(&self) {
        let listener = eventually(Duration::from_secs(5), || async {
            TcpListener::bind(self.addr).await.ok()
        })
        .await;
        self.serve(listener);
    }
}

/// Proves a database outage makes `/ready` fail naming the database, makes submissions fail
/// with a retriable 503 that stores nothing, and that the node recovers on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_reported_and_recovered() {
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let proxy = CuttableProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let proxied_url = database
        .url
        .replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    assert_ne!(
        proxied_url, database.url,
        "test database url goes through 127.0.0.1:5432"
    );
    let mut config = test_config(&proxied_url);
    config.database.connect_timeout_ms = 500;
    let service = TestService::around(Service::start(&config).await.unwrap(), database).await;

    let (status, _) = service.get_json("/ready").await;
    assert_eq!(status, 200);

    proxy.cut();
    let readiness = eventually(Duration::from_secs(10), || async {
        let (status, body) = service.get_json("/ready").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(readiness["failing"][0]["name"], "database", "{readiness}");

    let submission =
        json!({ "kind": "sentiment.analyze", "payload": { "texts": ["queued while down"] } });
    let response = service
        .client
        .post(service.url("/v1/jobs"))
        .json(&submission)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
    assert_eq!(body["retriable"], true);
    // Scoring texts needs no database and keeps working.
    let (status, _) = service
        .post_json("/v1/sentiment", &json!({ "texts": ["still scoring"] }))
        .await;
    assert_eq!(status, 200);

    proxy.restore().await;
    eventually(Duration::from_secs(15), || async {
        let (status, _) = service.get_json("/ready").await;
        (status == 200).then_some(())
    })
    .await;
    let (status, job) = service.post_json("/v1/jobs", &submission).await;
    assert_eq!(status, 202, "{job}");
    let done = service.wait_for_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded");
    let (_, listed) = service.get_json("/v1/jobs").await;
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        1,
        "the refused submission stored nothing"
    );
}

/// Proves two nodes on one PostgreSQL share the queue and run every job exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_run_each_job_once() {
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let node_a = Service::start(&test_config(&database.url)).await.unwrap();
    let node_b = Service::start(&test_config(&database.url)).await.unwrap();
    let node_b_url = format!("http://{}", node_b.addr);
    let node_a = TestService::around(node_a, database).await;
    let num_jobs = 120;
    let mut job_ids = Vec::new();
    for index in 0..num_jobs {
        let url = if index % 2 == 0 {
            node_a.url("/v1/jobs")
        } else {
            format!("{node_b_url}/v1/jobs")
        };
        let body = json!({ "kind": "sentiment.analyze", "payload": { "texts": [format!("job number {index} is good")] } });
        let response = node_a.client.post(url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 202);
        let job: serde_json::Value = response.json().await.unwrap();
        job_ids.push(job["id"].as_str().unwrap().to_owned());
    }
    for job_id in &job_ids {
        let job = node_a.wait_for_job(job_id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "claimed once: {job}");
    }
    node_b.shutdown().await.unwrap();
}
