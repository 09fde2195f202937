//! The scenario catalogue and how one scenario runs: build the cluster, drive the workload,
//! check the steady state, inject the fault, remove it, and measure.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::{Value, json};

use crate::cluster::{Cluster, ClusterParams};
use crate::fault_proxy::NetworkFault;
use crate::measure::{FinalRow, Measured, SloCheck, Window, measure, quantile};
use crate::workload::{Workload, WorkloadParams};

/// What carries the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// The PostgreSQL job table (the local queue).
    Database,
    RabbitMq,
}

/// The fault a scenario injects.
#[derive(Debug, Clone)]
pub enum Fault {
    /// SIGKILL node 0 mid-batch, measure how soon its running jobs run elsewhere, then start
    /// it again; `times` kills in a row.
    KillNode { times: u32 },
    /// SIGTERM node 0 under load, then start it again.
    TerminateNode,
    /// SIGTERM and restart every node, one after the other.
    RollingRestart,
    /// SIGSTOP node 0 past the dead-after interval, then SIGCONT: a node that was only slow.
    PauseNode { secs: u64 },
    /// Busy processes compete with the nodes for the CPU.
    StarveCpu { secs: u64 },
    /// `pg_terminate_backend` of every connection to the scenario's database.
    TerminateDatabaseConnections,
    /// An `ACCESS EXCLUSIVE` lock on `jobs` held for `secs`: every query waits (slow queries,
    /// pools exhausted).
    LockJobsTable { secs: u64 },
    /// PostgreSQL stopped for `secs` (0: a restart).
    StopPostgres { secs: u64 },
    /// `rabbitmqctl close_all_connections`.
    CloseBrokerConnections,
    /// `rabbitmqctl stop_app`, `secs` later `start_app`.
    StopBroker { secs: u64 },
    /// Messages no producer should send, published straight to the job queues.
    PoisonFlood { num_messages: u32 },
    /// The simulated engine misbehaves (its `FaultKnobs`) for `secs`.
    Provider { faults: Value, secs: u64 },
    /// A network fault on the fault proxies between the nodes (only node-a when `only_first`)
    /// and `target`, for `secs`.
    Network {
        target: Upstream,
        only_first: bool,
        fault: NetworkFault,
        secs: u64,
    },
    /// No fault: the load itself, for `secs` (leak and latency check).
    Load { secs: u64 },
    /// node-a's wall clock steps `offset_secs` (ahead when positive) for `secs`, then steps
    /// back: libfaketime preloaded into its process, the monotonic clock left alone, as an
    /// NTP step or an operator's `date -s` would do.
    ClockJump { offset_secs: i64, secs: u64 },
    /// `num_jobs` jobs whose text makes the sentiment inference thread panic (the `[chaos]`
    /// marker) submitted to node-a at once: its workers crash and restart until their supervisor
    /// exceeds its restart intensity and escalates; the rest of the work carries on. With
    /// `disk_full`, node-a's incident folder is a full tmpfs meanwhile.
    PanicFlood { num_jobs: u32, disk_full: bool },
    /// node-a's process moved into a memory cgroup limited to its resident size plus
    /// `headroom_mib` for `secs` (restarted, as an orchestrator would, if the kernel kills it).
    MemoryLimit { headroom_mib: u64, secs: u64 },
}

/// What a network fault stands between a node and.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Postgres,
    RabbitMq,
    Provider,
}

/// One scenario of the catalogue.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub description: &'static str,
    /// Part of `make chaos-smoke` (and so of `make test`).
    pub smoke: bool,
    pub transport: Transport,
    pub num_nodes: usize,
    /// Submissions per second.
    pub rate: f64,
    pub fault: Fault,
    /// Recovery SLO: steady state again within this long after the fault is removed.
    pub recover_slo: Duration,
    /// Accepted jobs may end failed (e.g. poison); otherwise every one must succeed.
    pub failures_allowed: bool,
    /// The fault leaves the nodes unable to accept work for longer than a client retries (the
    /// database down): submissions given up are reported, not an SLO. None was answered 2xx,
    /// so the client knows its job was not taken.
    pub refusals_expected: bool,
    /// TOML appended to every node's config (`[section]`s of the scenario's own).
    pub extra_config: &'static str,
    /// No job may run twice (the fault gives no node a reason to take another's job).
    pub no_duplicates: bool,
}

fn scenario(name: &'static str, description: &'static str, fault: Fault) -> Scenario {
    Scenario {
        name,
        description,
        smoke: false,
        transport: Transport::Database,
        num_nodes: 2,
        rate: 40.0,
        fault,
        recover_slo: Duration::from_secs(30),
        failures_allowed: false,
        refusals_expected: false,
        extra_config: "",
        no_duplicates: false,
    }
}

impl Scenario {
    fn on_rabbitmq(mut self) -> Self {
        self.transport = Transport::RabbitMq;
        self
    }

    fn smoke(mut self) -> Self {
        self.smoke = true;
        self
    }

    fn nodes(mut self, num_nodes: usize) -> Self {
        self.num_nodes = num_nodes;
        self
    }

    fn rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    fn recover_within(mut self, slo: Duration) -> Self {
        self.recover_slo = slo;
        self
    }

    fn failures_allowed(mut self) -> Self {
        self.failures_allowed = true;
        self
    }

    fn refusals_expected(mut self) -> Self {
        self.refusals_expected = true;
        self
    }

    fn config(mut self, extra_config: &'static str) -> Self {
        self.extra_config = extra_config;
        self
    }

    fn no_duplicates(mut self) -> Self {
        self.no_duplicates = true;
        self
    }
}

/// The producer submits half its jobs over HTTP with one key, every one a `provider.complete`:
/// at 1,000 jobs/s the default `submit` limit (500/s per key) and the key's daily provider calls
/// (10,000: spent in 20 s) would refuse them; a deployment that expects such a producer raises
/// both the same way.
const PRODUCER_AT_1000_PER_SECOND: &str = r#"
[auth]
daily_provider_calls = 1000000000

[auth.rate_limits.submit]
per_second = 5000
burst = 5000
"#;

/// The text that makes a node's sentiment inference thread panic (a `chaos` build only).
pub const PANIC_MARKER: &str = "chaos-game-day-panic";

const PANIC_ON_MARKER: &str = r#"
[chaos]
panic_on_text = "chaos-game-day-panic"
"#;

/// Every scenario, in the order `run --all` takes them.
pub fn catalogue() -> Vec<Scenario> {
    let load_secs = std::env::var("CHAOS_LOAD_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(600);
    vec![
        scenario("node-sigkill-db", "SIGKILL of one of two nodes mid-batch, database queue; its jobs must run elsewhere within 5 s", Fault::KillNode { times: 1 }).smoke(),
        scenario("node-sigkill-rabbitmq", "SIGKILL of one of two nodes mid-batch, RabbitMQ; its jobs must run elsewhere within 5 s", Fault::KillNode { times: 1 }).on_rabbitmq().smoke(),
        scenario("node-sigkill-10x", "ten SIGKILLs of a node in a row (database queue): p99 of its in-flight jobs running again under 5 s", Fault::KillNode { times: 10 }),
        scenario("node-sigterm-under-load", "SIGTERM of a node under load, then started again: drains, nothing lost", Fault::TerminateNode),
        scenario("node-rolling-restart", "rolling restart of two nodes under load (RabbitMQ)", Fault::RollingRestart).on_rabbitmq(),
        scenario("node-paused", "SIGSTOP of a node for 6 s (a node that is only slow): fenced, its jobs run once elsewhere, it stands down and rejoins", Fault::PauseNode { secs: 6 }),
        scenario("cpu-starvation", "four busy processes compete for the two cores for 15 s", Fault::StarveCpu { secs: 15 }),
        scenario("postgres-connections-reset", "every database connection of the nodes terminated (pg_terminate_backend)", Fault::TerminateDatabaseConnections).smoke(),
        scenario("postgres-lock-contention", "the jobs table locked for 8 s: slow queries, pools exhausted", Fault::LockJobsTable { secs: 8 }),
        scenario("postgres-restart", "PostgreSQL restarted under load", Fault::StopPostgres { secs: 0 }).recover_within(Duration::from_secs(60)),
        scenario("postgres-down-30s", "PostgreSQL down for 30 s under load (submissions fail meanwhile: the clients are told)", Fault::StopPostgres { secs: 30 }).recover_within(Duration::from_secs(60)).refusals_expected(),
        scenario("rabbitmq-connections-closed", "every RabbitMQ connection closed by the broker", Fault::CloseBrokerConnections).on_rabbitmq().smoke(),
        scenario("rabbitmq-stop-start-app", "RabbitMQ stop_app, start_app 5 s later", Fault::StopBroker { secs: 5 }).on_rabbitmq().recover_within(Duration::from_secs(60)),
        scenario("rabbitmq-down-30s", "RabbitMQ down for 30 s under load (the outbox absorbs submissions)", Fault::StopBroker { secs: 30 }).on_rabbitmq().recover_within(Duration::from_secs(60)),
        scenario("rabbitmq-poison-flood", "500 malformed messages published to the job queues: dead-lettered, the rest unaffected", Fault::PoisonFlood { num_messages: 500 }).on_rabbitmq(),
        scenario("provider-error-storm", "the answer engine answers 500 to everything for 10 s: breaker opens, fallback used", Fault::Provider { faults: json!({"error_rate": 1.0}), secs: 10 }),
        scenario("provider-429-storm", "the answer engine answers 429 with Retry-After for 10 s", Fault::Provider { faults: json!({"rate_limit_rate": 1.0, "retry_after_ms": 1000}), secs: 10 }),
        scenario("provider-hangs", "the answer engine never answers for 10 s: attempts time out, fallback used", Fault::Provider { faults: json!({"hang_rate": 1.0}), secs: 10 }),
        scenario("provider-slow-tail", "a third of the engine's answers take 2 s more for 10 s", Fault::Provider { faults: json!({"slow_rate": 0.3, "slow_ms": 2000, "latency_ms": 300}), secs: 10 }),
        scenario("provider-malformed", "the answer engine returns bodies that are not its format for 10 s", Fault::Provider { faults: json!({"malformed_rate": 1.0}), secs: 10 }),
        scenario("postgres-latency", "50 ± 25 ms on every byte between the nodes and PostgreSQL for 15 s", Fault::Network { target: Upstream::Postgres, only_first: false, fault: NetworkFault::Latency { latency_ms: 50, jitter_ms: 25 }, secs: 15 }),
        scenario("postgres-partition-node", "node-a cut from PostgreSQL for 8 s (its connections closed, new ones refused): node-b fences it and runs its jobs, node-a stands down and rejoins", Fault::Network { target: Upstream::Postgres, only_first: true, fault: NetworkFault::Down, secs: 8 }),
        scenario("postgres-connection-cuts", "every connection to PostgreSQL cut after 16 KiB for 10 s (resets mid-query)", Fault::Network { target: Upstream::Postgres, only_first: false, fault: NetworkFault::CutAfter { bytes: 16 * 1024 }, secs: 10 }),
        scenario("rabbitmq-latency-jitter", "100 ± 50 ms on every byte between the nodes and RabbitMQ for 15 s", Fault::Network { target: Upstream::RabbitMq, only_first: false, fault: NetworkFault::Latency { latency_ms: 100, jitter_ms: 50 }, secs: 15 }).on_rabbitmq(),
        scenario("rabbitmq-bandwidth", "the nodes' RabbitMQ connections limited to 32 KiB/s for 15 s", Fault::Network { target: Upstream::RabbitMq, only_first: false, fault: NetworkFault::Bandwidth { kib_per_second: 32 }, secs: 15 }).on_rabbitmq(),
        scenario("rabbitmq-partition-node", "node-a cut from RabbitMQ for 10 s (its connection closed, new ones refused)", Fault::Network { target: Upstream::RabbitMq, only_first: true, fault: NetworkFault::Down, secs: 10 }).on_rabbitmq(),
        scenario("provider-connection-resets", "connections to the answer engine cut after 512 bytes for 10 s", Fault::Network { target: Upstream::Provider, only_first: false, fault: NetworkFault::CutAfter { bytes: 512 }, secs: 10 }),
        scenario("node-clock-jump", "node-a's wall clock steps 10 minutes ahead for 15 s, then back: no node takes a live node's jobs, none runs twice", Fault::ClockJump { offset_secs: 600, secs: 15 }).no_duplicates(),
        scenario("node-panic-flood", "6 jobs that panic the sentiment inference thread sent to node-a at once (30 crashes with their retries): workers restart, their supervisor escalates again and again, the node serves on, the rest of the work succeeds", Fault::PanicFlood { num_jobs: 6, disk_full: false }).config(PANIC_ON_MARKER),
        scenario("node-incident-dir-full", "4 panicking jobs while node-a's incident folder is a full tmpfs: dumps fail and are counted, the node serves on", Fault::PanicFlood { num_jobs: 4, disk_full: true }).config(PANIC_ON_MARKER),
        scenario("node-memory-limit", "node-a confined to a memory cgroup of its resident size plus 24 MiB for 20 s under load", Fault::MemoryLimit { headroom_mib: 24, secs: 20 }),
        scenario("load-sustained", "sustained load over RabbitMQ (CHAOS_LOAD_SECS, default 600 s): memory flat, p99 within SLO", Fault::Load { secs: load_secs }).on_rabbitmq().rate(1000.0).nodes(2).config(PRODUCER_AT_1000_PER_SECOND),
    ]
    .into_iter()
    .map(|mut scenario| {
        if matches!(scenario.fault, Fault::PoisonFlood { .. }) {
            scenario = scenario.failures_allowed();
        }
        scenario
    })
    .collect()
}

/// Where and with what a scenario runs.
#[derive(Debug, Clone)]
pub struct RunParams {
    pub bin: std::path::PathBuf,
    pub postgres_url: String,
    pub amqp_url: String,
    pub out_dir: std::path::PathBuf,
}

/// The JSON report of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub description: String,
    pub transport: Transport,
    pub num_nodes: usize,
    pub rate: f64,
    pub started_at_unix_ms: u64,
    pub fault_start_ms: u64,
    pub fault_end_ms: u64,
    /// Per kill: how long until every job the killed node ran was running again elsewhere.
    pub reclaim_ms: Vec<u64>,
    pub reclaim_p99_ms: Option<u64>,
    pub measured: Measured,
    pub slos: Vec<SloCheck>,
    pub notes: Vec<String>,
    pub pass: bool,
}

/// How long the workload runs before the fault, and after it is removed.
const WARMUP: Duration = Duration::from_secs(6);
const AFTER: Duration = Duration::from_secs(10);
const DRAIN: Duration = Duration::from_secs(90);

pub async fn run(scenario: &Scenario, params: &RunParams) -> anyhow::Result<ScenarioReport> {
    let run_dir = params.out_dir.join(scenario.name);
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;
    let started_at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let first_node_env = match scenario.fault {
        Fault::ClockJump { .. } => fake_clock_env(&run_dir)?,
        _ => Vec::new(),
    };
    let mut cluster = Cluster::start(ClusterParams {
        bin: params.bin.clone(),
        postgres_url: params.postgres_url.clone(),
        amqp_url_opt: (scenario.transport == Transport::RabbitMq).then(|| params.amqp_url.clone()),
        num_nodes: scenario.num_nodes,
        run_dir: run_dir.clone(),
        extra_config: scenario.extra_config.to_owned(),
        first_node_env,
        proxied: matches!(scenario.fault, Fault::Network { .. }),
    })
    .await?;
    let result = drive(scenario, &mut cluster).await;
    cluster.teardown().await;
    let driven = result?;
    let measured = measure(&driven.observed, &driven.rows, driven.window);
    let reclaim_p99_ms = quantile(&driven.reclaim_ms, 0.99);
    let mut slos = slos(scenario, &measured, reclaim_p99_ms);
    slos.extend(driven.checks);
    let pass = slos.iter().all(|slo| slo.pass);
    let report = ScenarioReport {
        name: scenario.name.to_owned(),
        description: scenario.description.to_owned(),
        transport: scenario.transport,
        num_nodes: scenario.num_nodes,
        rate: scenario.rate,
        started_at_unix_ms,
        fault_start_ms: driven.window.fault_start_ms,
        fault_end_ms: driven.window.fault_end_ms,
        reclaim_ms: driven.reclaim_ms,
        reclaim_p99_ms,
        measured,
        slos,
        notes: driven.notes,
        pass,
    };
    std::fs::create_dir_all(&run_dir)?;
    std::fs::write(
        run_dir.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(report)
}

/// What a scenario's run left to measure.
struct Driven {
    observed: crate::workload::Observed,
    window: Window,
    reclaim_ms: Vec<u64>,
    notes: Vec<String>,
    checks: Vec<SloCheck>,
    rows: Vec<FinalRow>,
}

async fn drive(scenario: &Scenario, cluster: &mut Cluster) -> anyhow::Result<Driven> {
    let pids = cluster
        .nodes
        .iter()
        .map(crate::cluster::Node::pid)
        .collect();
    let workload = Workload::start(
        WorkloadParams {
            node_urls: cluster
                .nodes
                .iter()
                .map(crate::cluster::Node::base_url)
                .collect(),
            rate: scenario.rate,
            // The load is sentiment jobs alone: a provider job holds an attempt for the
            // engine's 300 ms, so half the mix would cap the cluster near 100 jobs/s.
            provider_every: if matches!(scenario.fault, Fault::Load { .. }) {
                0
            } else {
                2
            },
            pool: cluster.pool.clone(),
            events_opt: cluster
                .params
                .amqp_url_opt
                .clone()
                .zip(cluster.namespace_opt.clone()),
        },
        pids,
    )
    .await?;
    tokio::time::sleep(WARMUP).await;
    let fault_start_ms = workload.elapsed_ms();
    let mut notes = Vec::new();
    let mut reclaim_ms = Vec::new();
    let mut checks = Vec::new();
    inject(
        scenario,
        cluster,
        &workload,
        &mut Effects {
            notes: &mut notes,
            reclaim_ms: &mut reclaim_ms,
            checks: &mut checks,
        },
    )
    .await?;
    let fault_end_ms = workload.elapsed_ms();
    tokio::time::sleep(AFTER).await;
    let observed = workload.finish(&cluster.pool, DRAIN).await;
    let rows: Vec<FinalRow> =
        sqlx::query_as("SELECT id, idempotency_key, status, attempts FROM jobs")
            .fetch_all(&cluster.pool)
            .await
            .context("failed to read the jobs at the end")?;
    let window = Window {
        fault_start_ms,
        fault_end_ms,
        expected_ready: scenario.num_nodes,
        rate: scenario.rate,
    };
    Ok(Driven {
        observed,
        window,
        reclaim_ms,
        notes,
        checks,
        rows,
    })
}

struct Effects<'a> {
    notes: &'a mut Vec<String>,
    reclaim_ms: &'a mut Vec<u64>,
    /// SLOs only this fault has (e.g. the supervisor escalated).
    checks: &'a mut Vec<SloCheck>,
}

async fn inject(
    scenario: &Scenario,
    cluster: &mut Cluster,
    workload: &Workload,
    effects: &mut Effects<'_>,
) -> anyhow::Result<()> {
    match &scenario.fault {
        Fault::KillNode { times } => {
            for kill in 0..*times {
                let reclaim = kill_and_measure_reclaim(cluster, workload).await?;
                effects.notes.push(format!(
                    "kill {}: {} running jobs on the killed node, all running again after {} ms",
                    kill + 1,
                    reclaim.num_jobs,
                    reclaim.elapsed_ms
                ));
                effects.reclaim_ms.push(reclaim.elapsed_ms);
                restart(cluster, workload, 0).await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }
        Fault::TerminateNode => {
            cluster.nodes[0].signal(Signal::SIGTERM)?;
            if !cluster.nodes[0].wait_exit(Duration::from_secs(15)).await {
                bail!("node-a did not exit within 15 s of SIGTERM");
            }
            workload.set_pid(0, None);
            restart(cluster, workload, 0).await?;
        }
        Fault::RollingRestart => {
            for index in 0..cluster.nodes.len() {
                cluster.nodes[index].signal(Signal::SIGTERM)?;
                if !cluster.nodes[index]
                    .wait_exit(Duration::from_secs(15))
                    .await
                {
                    bail!(
                        "{} did not exit within 15 s of SIGTERM",
                        cluster.nodes[index].name
                    );
                }
                workload.set_pid(index, None);
                restart(cluster, workload, index).await?;
            }
        }
        Fault::PauseNode { secs } => {
            cluster.nodes[0].signal(Signal::SIGSTOP)?;
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            cluster.nodes[0].signal(Signal::SIGCONT)?;
        }
        Fault::StarveCpu { secs } => {
            let mut burners = Vec::new();
            for _ in 0..4 {
                burners.push(
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .context("failed to start a CPU burner")?,
                );
            }
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            for mut burner in burners {
                let _ = burner.kill();
                let _ = burner.wait();
            }
        }
        Fault::TerminateDatabaseConnections => {
            let terminated: Vec<(bool,)> = sqlx::query_as(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_all(&cluster.pool)
            .await?;
            effects.notes.push(format!(
                "{} database connections terminated",
                terminated.len()
            ));
        }
        Fault::LockJobsTable { secs } => {
            let mut transaction = cluster.pool.begin().await?;
            sqlx::query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
                .execute(&mut *transaction)
                .await?;
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            transaction.rollback().await?;
        }
        Fault::StopPostgres { secs } => {
            let version = postgres_cluster_version()?;
            if *secs == 0 {
                pg_ctl(&version, "restart")?;
            } else {
                pg_ctl(&version, "stop")?;
                tokio::time::sleep(Duration::from_secs(*secs)).await;
                pg_ctl(&version, "start")?;
            }
        }
        Fault::CloseBrokerConnections => {
            rabbitmqctl(&["close_all_connections", "bulwark game day"])?;
        }
        Fault::StopBroker { secs } => {
            rabbitmqctl(&["stop_app"])?;
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            rabbitmqctl(&["start_app"])?;
        }
        Fault::PoisonFlood { num_messages } => {
            let namespace = cluster
                .namespace_opt
                .clone()
                .context("a broker namespace")?;
            let url = cluster
                .params
                .amqp_url_opt
                .clone()
                .context("a broker url")?;
            publish_poison(&url, &namespace, *num_messages).await?;
            effects
                .notes
                .push(format!("{num_messages} malformed messages published"));
        }
        Fault::Provider { faults, secs } => {
            cluster.simulator.set_faults(faults).await?;
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            cluster
                .simulator
                .set_faults(&json!({"latency_ms": 300}))
                .await?;
        }
        Fault::Network {
            target,
            only_first,
            fault,
            secs,
        } => {
            let proxies: Vec<&crate::fault_proxy::FaultProxy> = cluster
                .proxies
                .iter()
                .take(if *only_first { 1 } else { usize::MAX })
                .filter_map(|node| match target {
                    Upstream::Postgres => Some(&node.postgres),
                    Upstream::RabbitMq => node.amqp_opt.as_ref(),
                    Upstream::Provider => Some(&node.provider),
                })
                .collect();
            if proxies.is_empty() {
                bail!("no fault proxy stands between the nodes and {target:?}");
            }
            for proxy in &proxies {
                proxy.inject(*fault).await?;
            }
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            for proxy in &proxies {
                proxy.heal().await?;
            }
        }
        Fault::Load { secs } => {
            tokio::time::sleep(Duration::from_secs(*secs)).await;
        }
        Fault::ClockJump { offset_secs, secs } => {
            let file = fake_clock_file(&cluster.params.run_dir);
            std::fs::write(&file, format!("{offset_secs:+}\n"))?;
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            std::fs::write(&file, "+0\n")?;
            effects.notes.push(format!(
                "node-a's wall clock {offset_secs:+} s for {secs} s, then back"
            ));
        }
        Fault::PanicFlood {
            num_jobs,
            disk_full,
        } => panic_flood(cluster, *num_jobs, *disk_full, effects).await?,
        Fault::MemoryLimit { headroom_mib, secs } => {
            let pid = cluster.nodes[0].pid().context("node-a is not running")?;
            let cgroup = crate::faults::MemoryCgroup::confine(pid, *headroom_mib)?;
            effects.notes.push(format!(
                "node-a limited to {} MiB ({})",
                cgroup.limit_bytes / (1024 * 1024),
                cgroup.describe()
            ));
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            let released = cgroup.release();
            effects.notes.push(released);
            if !cluster.nodes[0].is_running() {
                effects
                    .notes
                    .push("node-a was killed under the limit, started again".to_owned());
                workload.set_pid(0, None);
                restart(cluster, workload, 0).await?;
            }
        }
    }
    Ok(())
}

/// Where the fake clock of node-a reads its offset (libfaketime's timestamp file).
fn fake_clock_file(run_dir: &std::path::Path) -> std::path::PathBuf {
    run_dir.join("fake-clock")
}

/// The environment that preloads libfaketime into node-a, its offset read from a file the
/// runner rewrites (at most a second late), the monotonic clock left alone.
fn fake_clock_env(run_dir: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let library = crate::faults::libfaketime()?;
    let file = fake_clock_file(run_dir);
    std::fs::write(&file, "+0\n")?;
    Ok(vec![
        ("LD_PRELOAD".to_owned(), library.display().to_string()),
        (
            "FAKETIME_TIMESTAMP_FILE".to_owned(),
            file.display().to_string(),
        ),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
        ("FAKETIME_CACHE_DURATION".to_owned(), "1".to_owned()),
    ])
}

/// Sends `num_jobs` panicking jobs to node-a and waits until every one ended (failed or dead
/// after its attempts), then checks that a supervisor escalated, and with `disk_full` that the
/// node counted the incident dumps it could not write and kept serving.
async fn panic_flood(
    cluster: &mut Cluster,
    num_jobs: u32,
    disk_full: bool,
    effects: &mut Effects<'_>,
) -> anyhow::Result<()> {
    let node_url = cluster.nodes[0].base_url();
    let full_disk_opt = if disk_full {
        Some(crate::faults::FullDisk::mount(
            &cluster.nodes[0].dir().join("reports/incidents"),
        )?)
    } else {
        None
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    const ESCALATIONS: &str = "bulwark_supervisor_escalations_total";
    const WRITE_FAILURES: &str = "bulwark_incident_write_failures_total";
    let before = crate::faults::scrape(&client, &node_url, &[ESCALATIONS, WRITE_FAILURES]).await?;
    for index in 0..num_jobs {
        let body = json!({
            "kind": "sentiment.analyze",
            "payload": {"texts": [format!("{PANIC_MARKER} {index}")]},
            "idempotency_key": format!("poison-{index}"),
        });
        let response = client
            .post(format!("{node_url}/v1/jobs"))
            .bearer_auth(crate::cluster::ADMIN_KEY)
            .json(&body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("node-a refused a panicking job: {}", response.status());
        }
    }
    // Each panicking job crashes a worker on every attempt; restarts back off (up to
    // `supervision.backoff_max_ms` at the root), so a flood drains at a crash or two every few
    // seconds.
    let deadline = Instant::now() + Duration::from_secs(300);
    let num_ended = loop {
        let num_ended: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE idempotency_key LIKE 'poison-%' \
             AND status NOT IN ('queued', 'running')",
        )
        .fetch_one(&cluster.pool)
        .await?;
        if num_ended >= i64::from(num_jobs) || Instant::now() > deadline {
            break num_ended;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let after = crate::faults::scrape(&client, &node_url, &[ESCALATIONS, WRITE_FAILURES]).await?;
    drop(full_disk_opt);
    let escalations = after[0] - before[0];
    effects.notes.push(format!(
        "{num_ended} of {num_jobs} panicking jobs ended (failed or dead); node-a's supervisors escalated {escalations} times"
    ));
    effects.checks.push(SloCheck {
        name: "panicking jobs ended, none lost".to_owned(),
        target: num_jobs.to_string(),
        actual: num_ended.to_string(),
        pass: num_ended == i64::from(num_jobs),
    });
    effects.checks.push(SloCheck {
        name: "a supervisor escalated".to_owned(),
        target: "≥ 1".to_owned(),
        actual: format!("{escalations}"),
        pass: escalations >= 1.0,
    });
    if disk_full {
        let failures = after[1] - before[1];
        effects.checks.push(SloCheck {
            name: "dumps that did not fit counted".to_owned(),
            target: "≥ 1".to_owned(),
            actual: format!("{failures}"),
            pass: failures >= 1.0,
        });
    }
    Ok(())
}

struct Reclaim {
    num_jobs: usize,
    elapsed_ms: u64,
}

/// Kills node-a once it runs jobs, then polls until every job it was running is running again
/// (or finished) under another owner; returns how long that took.
async fn kill_and_measure_reclaim(
    cluster: &mut Cluster,
    workload: &Workload,
) -> anyhow::Result<Reclaim> {
    let owner = "chaos-node-a";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE status = 'running' AND lease_owner = $1",
        )
        .bind(owner)
        .fetch_one(&cluster.pool)
        .await?;
        if running >= 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("node-a held no running jobs to kill within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.nodes[0].signal(Signal::SIGKILL)?;
    let killed = Instant::now();
    cluster.nodes[0].wait_exit(Duration::from_secs(5)).await;
    workload.set_pid(0, None);
    let held: Vec<String> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'running' AND lease_owner = $1")
            .bind(owner)
            .fetch_all(&cluster.pool)
            .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let still_held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'running' \
             AND (lease_owner = $2 OR lease_owner IS NULL)",
        )
        .bind(&held)
        .bind(owner)
        .fetch_one(&cluster.pool)
        .await?;
        let still_queued: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'queued'",
        )
        .bind(&held)
        .fetch_one(&cluster.pool)
        .await?;
        if still_held == 0 && still_queued == 0 {
            return Ok(Reclaim {
                num_jobs: held.len(),
                elapsed_ms: killed.elapsed().as_millis() as u64,
            });
        }
        if Instant::now() > deadline {
            bail!(
                "the killed node's {} jobs were not running again within 60 s",
                held.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn restart(cluster: &mut Cluster, workload: &Workload, index: usize) -> anyhow::Result<()> {
    cluster.start_node(index).await?;
    workload.set_pid(index, cluster.nodes[index].pid());
    Ok(())
}

fn postgres_cluster_version() -> anyhow::Result<String> {
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .context("no /etc/postgresql: the PostgreSQL scenarios need a local Debian cluster")?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    versions
        .into_iter()
        .max()
        .context("no PostgreSQL cluster under /etc/postgresql")
}

fn pg_ctl(version: &str, action: &str) -> anyhow::Result<()> {
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, "main", action])
        .status()
        .context("failed to run pg_ctlcluster")?;
    if !status.success() {
        bail!("pg_ctlcluster {version} main {action} failed: {status}");
    }
    Ok(())
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("failed to run rabbitmqctl")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Publishes messages no producer should send (bodies that are not a job envelope) to the
/// sentiment job queue, with confirms.
async fn publish_poison(url: &str, namespace: &str, num_messages: u32) -> anyhow::Result<()> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let connection =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let topology = bulwark_broker::Topology {
        namespace: namespace.to_owned(),
        delivery_limit: 5,
        queue_limits: bulwark_broker::QueueLimits::default(),
    };
    let queue = topology.job_queue("sentiment.analyze");
    for index in 0..num_messages {
        let body = match index % 3 {
            0 => b"{not json".to_vec(),
            1 => br#"{"v": 1, "kind": "no.such.kind", "payload": {}}"#.to_vec(),
            _ => br#"{"v": 1, "kind": "sentiment.analyze", "payload": {"texts": 42}}"#.to_vec(),
        };
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                lapin::BasicProperties::default(),
            )
            .await?
            .await?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

fn slos(scenario: &Scenario, measured: &Measured, reclaim_p99_ms: Option<u64>) -> Vec<SloCheck> {
    let mut checks = vec![
        SloCheck {
            name: "jobs lost".to_owned(),
            target: "0".to_owned(),
            actual: measured.num_lost.to_string(),
            pass: measured.num_lost == 0,
        },
        SloCheck {
            name: "outcome conflicts".to_owned(),
            target: "0".to_owned(),
            actual: measured.num_outcome_conflicts.to_string(),
            pass: measured.num_outcome_conflicts == 0,
        },
        SloCheck {
            name: "recovered".to_owned(),
            target: format!("≤ {} s", scenario.recover_slo.as_secs()),
            actual: measured.recover_ms.map_or("never".to_owned(), |ms| {
                format!("{:.1} s", ms as f64 / 1000.0)
            }),
            pass: measured
                .recover_ms
                .is_some_and(|ms| ms <= scenario.recover_slo.as_millis() as u64),
        },
    ];
    if !scenario.refusals_expected {
        checks.push(SloCheck {
            name: "HTTP submissions given up".to_owned(),
            target: "0".to_owned(),
            actual: measured.num_given_up.to_string(),
            pass: measured.num_given_up == 0,
        });
    }
    // With the broker down an outside producer cannot publish: reported, not Bulwark's SLO.
    if !matches!(scenario.fault, Fault::StopBroker { .. }) {
        checks.push(SloCheck {
            name: "AMQP publishes given up".to_owned(),
            target: "0".to_owned(),
            actual: measured.num_given_up_amqp.to_string(),
            pass: measured.num_given_up_amqp == 0,
        });
    }
    if !scenario.failures_allowed {
        checks.push(SloCheck {
            name: "accepted jobs not succeeded".to_owned(),
            target: "0".to_owned(),
            actual: measured.num_not_succeeded.to_string(),
            pass: measured.num_not_succeeded == 0,
        });
    }
    if let Fault::Load { secs } = scenario.fault {
        // The producer runs through the warm-up, the load and the time after it.
        let producing_secs = (WARMUP + AFTER).as_secs() + secs;
        let accepted_per_second = measured.num_accepted as f64 / producing_secs.max(1) as f64;
        checks.push(SloCheck {
            name: "jobs accepted per second (the load sustained)".to_owned(),
            target: format!("≥ {:.0}", scenario.rate * 0.9),
            actual: format!("{accepted_per_second:.0}"),
            pass: accepted_per_second >= scenario.rate * 0.9,
        });
    }
    if scenario.no_duplicates {
        checks.push(SloCheck {
            name: "duplicate executions".to_owned(),
            target: "0".to_owned(),
            actual: measured.num_duplicate_executions.to_string(),
            pass: measured.num_duplicate_executions == 0,
        });
    }
    if let Some(p99) = reclaim_p99_ms {
        checks.push(SloCheck {
            name: "killed node's jobs running again (p99)".to_owned(),
            target: "< 5 s".to_owned(),
            actual: format!("{:.2} s", p99 as f64 / 1000.0),
            pass: p99 < 5_000,
        });
    }
    checks
}
