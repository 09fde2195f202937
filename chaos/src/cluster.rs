//! The system under test: a fresh PostgreSQL database, optionally a RabbitMQ namespace, a
//! `bulwark simulate-provider` process, and `bulwark serve` nodes, each with its own config file
//! and log in the run's folder. Everything is torn down when the cluster is dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::fault_proxy::{FaultProxy, authority_of, through};

/// The admin key every node is bootstrapped with; the producer submits with it.
pub const ADMIN_KEY: &str = "bwk_ChaosGameDayAdminKey0123456789abcdefghijklm";

/// How a scenario's cluster is built.
#[derive(Debug, Clone)]
pub struct ClusterParams {
    pub bin: PathBuf,
    /// A PostgreSQL URL whose user may create databases (the scenario's is created beside it).
    pub postgres_url: String,
    /// Set: jobs travel over RabbitMQ in a namespace of their own.
    pub amqp_url_opt: Option<String>,
    pub num_nodes: usize,
    pub run_dir: PathBuf,
    /// Extra `[section]` TOML appended to every node's config (a scenario's own settings).
    pub extra_config: String,
    /// Environment of the first node's process beside the usual (a fault injected through
    /// it, e.g. a preloaded fake clock).
    pub first_node_env: Vec<(String, String)>,
    /// Every node reaches PostgreSQL, RabbitMQ and the answer engine through fault proxies of
    /// its own ([`NodeProxies`]).
    pub proxied: bool,
}

/// The fault proxies between one node and what it depends on.
#[derive(Debug)]
pub struct NodeProxies {
    pub postgres: FaultProxy,
    pub amqp_opt: Option<FaultProxy>,
    pub provider: FaultProxy,
}

/// One `bulwark serve` process, restartable on the same port and config.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub port: u16,
    config_path: PathBuf,
    dir: PathBuf,
    /// The node's own database URL (through its proxy when proxied).
    database_url: String,
    env: Vec<(String, String)>,
    child_opt: Option<Child>,
    starts: u32,
}

impl Node {
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The node's working folder (its incidents go to `reports/incidents` in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child_opt.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child_opt {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the node (again), logging to `<name>.<start>.log` in its folder.
    pub fn start(&mut self, bin: &Path) -> anyhow::Result<()> {
        self.starts += 1;
        let log_path = self.dir.join(format!("{}.{}.log", self.name, self.starts));
        let log = fs::File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .current_dir(&self.dir)
            .env("DATABASE_URL", &self.database_url)
            .env("BULWARK_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env("BULWARK_LOG_FORMAT", "json")
            .env("BULWARK_LOG", "info")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", bin.display()))?;
        self.child_opt = Some(child);
        Ok(())
    }

    /// Sends `signal` to the node's process.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            bail!("node {} is not running", self.name);
        };
        kill(Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("failed to send {signal} to node {}", self.name))
    }

    /// Waits up to `timeout` for the process to exit; returns whether it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                self.child_opt = None;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn stop_now(&mut self) {
        if let Some(mut child) = self.child_opt.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The simulated answer engine the nodes' `sim` provider calls over loopback HTTP; its faults
/// change live through `PUT /admin/faults`.
#[derive(Debug)]
pub struct Simulator {
    pub base_url: String,
    child: Child,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Simulator {
    /// Sets the engine's faults (the simulator's `FaultKnobs` as JSON; unnamed knobs reset).
    pub async fn set_faults(&self, faults: &serde_json::Value) -> anyhow::Result<()> {
        let response = reqwest::Client::new()
            .put(format!("{}/admin/faults", self.base_url))
            .json(faults)
            .send()
            .await
            .context("the simulator's admin endpoint did not answer")?;
        if !response.status().is_success() {
            bail!(
                "the simulator refused faults {faults}: {}",
                response.status()
            );
        }
        Ok(())
    }
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    pub params: ClusterParams,
    database_name: String,
    pub namespace_opt: Option<String>,
    pub nodes: Vec<Node>,
    /// One set per node when the scenario is proxied, in node order.
    pub proxies: Vec<NodeProxies>,
    pub simulator: Simulator,
    pub pool: sqlx::PgPool,
}

/// Returns a loopback port free now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Returns `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let base = base.rsplit_once('/').map_or(base, |(head, _)| head);
    if query.is_empty() {
        format!("{base}/{database}")
    } else {
        format!("{base}/{database}?{query}")
    }
}

impl Cluster {
    /// Creates the database, starts the simulator and every node, and waits until all are
    /// ready.
    pub async fn start(params: ClusterParams) -> anyhow::Result<Cluster> {
        fs::create_dir_all(&params.run_dir)?;
        let database_name = format!("chaos_{}", uuid::Uuid::now_v7().simple());
        let admin = sqlx::PgPool::connect(&params.postgres_url)
            .await
            .with_context(|| format!("postgresql is unreachable at {}", params.postgres_url))?;
        // The name is ours: `chaos_` and a UUID's hex digits.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {database_name}"
        )))
        .execute(&admin)
        .await
        .context("failed to create the scenario's database")?;
        admin.close().await;
        let database_url = with_database(&params.postgres_url, &database_name);
        let simulator = start_simulator(&params.bin, &params.run_dir).await?;
        let namespace_opt = params
            .amqp_url_opt
            .as_ref()
            .map(|_| format!("chaos-{}", uuid::Uuid::now_v7().simple()));
        let mut nodes = Vec::new();
        let mut proxies = Vec::new();
        for index in 0..params.num_nodes {
            let name = format!("node-{}", (b'a' + index as u8) as char);
            let dir = params.run_dir.join(&name);
            fs::create_dir_all(&dir)?;
            let port = free_port()?;
            let config_path = dir.join("bulwark.toml");
            let mut node_database_url = database_url.clone();
            let mut node_amqp_url_opt = params.amqp_url_opt.clone();
            let mut node_simulator_url = simulator.base_url.clone();
            if params.proxied {
                let postgres = FaultProxy::start(
                    &format!("{name}-postgres"),
                    &authority_of(&database_url, 5432)?,
                )
                .await?;
                node_database_url = through(&database_url, &postgres.listen)?;
                let amqp_opt = match &params.amqp_url_opt {
                    Some(url) => {
                        let proxy =
                            FaultProxy::start(&format!("{name}-amqp"), &authority_of(url, 5672)?)
                                .await?;
                        node_amqp_url_opt = Some(through(url, &proxy.listen)?);
                        Some(proxy)
                    }
                    None => None,
                };
                let provider = FaultProxy::start(
                    &format!("{name}-provider"),
                    &authority_of(&simulator.base_url, 80)?,
                )
                .await?;
                node_simulator_url = format!("http://{}", provider.listen);
                proxies.push(NodeProxies {
                    postgres,
                    amqp_opt,
                    provider,
                });
            }
            let config = node_config(&NodeConfig {
                name: &name,
                port,
                simulator_url: &node_simulator_url,
                amqp_opt: node_amqp_url_opt.as_deref().zip(namespace_opt.as_deref()),
                extra: &params.extra_config,
            });
            fs::write(&config_path, config)?;
            nodes.push(Node {
                name,
                port,
                config_path,
                dir,
                database_url: node_database_url,
                env: if index == 0 {
                    params.first_node_env.clone()
                } else {
                    Vec::new()
                },
                child_opt: None,
                starts: 0,
            });
        }
        // The first node migrates the database alone, then the others join.
        let mut cluster = Cluster {
            pool: sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .connect_lazy(&database_url)?,
            params,
            database_name,
            namespace_opt,
            nodes,
            proxies,
            simulator,
        };
        for index in 0..cluster.nodes.len() {
            cluster.start_node(index).await?;
        }
        Ok(cluster)
    }

    /// Starts node `index` and waits for its `/ready` (at most 60 s).
    pub async fn start_node(&mut self, index: usize) -> anyhow::Result<()> {
        let bin = self.params.bin.clone();
        let node = &mut self.nodes[index];
        node.start(&bin)?;
        let url = format!("{}/ready", node.base_url());
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if !node.is_running() {
                bail!(
                    "node {} exited at start; see its log in {}",
                    node.name,
                    node.dir.display()
                );
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("node {} was not ready within 60 s", node.name)
    }

    /// Stops every process and drops the database and the broker namespace (kept for a
    /// post-mortem when `CHAOS_KEEP_DATABASE` is set).
    pub async fn teardown(mut self) {
        for node in &mut self.nodes {
            node.stop_now();
        }
        self.pool.close().await;
        if std::env::var_os("CHAOS_KEEP_DATABASE").is_some() {
            eprintln!(
                "CHAOS_KEEP_DATABASE: database {} and broker namespace {:?} kept",
                self.database_name, self.namespace_opt
            );
            return;
        }
        if let Ok(admin) = sqlx::PgPool::connect(&self.params.postgres_url).await {
            let drop = format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database_name
            );
            if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await {
                eprintln!("warning: failed to drop {}: {error}", self.database_name);
            }
            admin.close().await;
        }
        if let (Some(url), Some(namespace)) = (&self.params.amqp_url_opt, &self.namespace_opt)
            && let Err(error) = delete_namespace(url, namespace).await
        {
            eprintln!("warning: failed to delete broker namespace {namespace}: {error}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop_now();
        }
    }
}

async fn delete_namespace(url: &str, namespace: &str) -> anyhow::Result<()> {
    let connection =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let topology = bulwark_broker::Topology {
        namespace: namespace.to_owned(),
        delivery_limit: 5,
        queue_limits: bulwark_broker::QueueLimits::default(),
    };
    topology.delete(&channel).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

async fn start_simulator(bin: &Path, run_dir: &Path) -> anyhow::Result<Simulator> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let log = fs::File::create(run_dir.join("simulator.log"))?;
    let child = Command::new(bin)
        .args(["simulate-provider", "--addr", &addr, "--latency-ms", "300"])
        .env("BULWARK_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("failed to start bulwark simulate-provider")?;
    let simulator = Simulator {
        base_url: format!("http://{addr}"),
        child,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client
            .get(format!("{}/admin/stats", simulator.base_url))
            .send()
            .await
            && response.status().is_success()
        {
            return Ok(simulator);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the simulated provider did not answer within 30 s")
}

struct NodeConfig<'a> {
    name: &'a str,
    port: u16,
    simulator_url: &'a str,
    /// The broker URL and namespace.
    amqp_opt: Option<(&'a str, &'a str)>,
    extra: &'a str,
}

/// A node's config: the lexicon engine (no model needed), a `sim` provider over HTTP at the
/// simulator with an in-process `backup` as its fallback, short shutdown and lease settings.
fn node_config(node: &NodeConfig<'_>) -> String {
    let mut config = format!(
        r#"[http]
addr = "127.0.0.1:{port}"

[jobs]
node_id = "chaos-{name}"
concurrency = 16

[sentiment]
engine = "lexicon"

[shutdown]
timeout_ms = 10000

[providers.sim]
kind = "openai"
base_url = "{simulator}/v1"
allow_plain_http = true
max_attempts = 3
retry_base_ms = 50
retry_max_ms = 500
attempt_timeout_ms = 3000
call_deadline_ms = 10000
fallback = ["backup"]

[providers.backup]
kind = "simulated"
"#,
        port = node.port,
        name = node.name,
        simulator = node.simulator_url,
    );
    if let Some((url, namespace)) = node.amqp_opt {
        config.push_str(&format!(
            r#"
[amqp]
url = "{url}"
namespace = "{namespace}"
reconnect_backoff_ms = 100
reconnect_backoff_max_ms = 1000
republish_interval_ms = 200
connect_timeout_ms = 2000
confirm_timeout_ms = 5000
"#
        ));
    }
    config.push_str(node.extra);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the scenario's database replaces the admin URL's, keeping its query.
    #[test]
    fn database_is_replaced_in_the_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "chaos_1"),
            "postgres://postgres@127.0.0.1:5432/chaos_1"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "chaos_2"),
            "postgres://u@h/chaos_2?sslmode=disable"
        );
    }
}
