use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_actors::{
    DrainReport, InFlightJobs, JobControlParams, JobControls, JobExecutor, JobIntake,
    JobRunnerHandle, JobRunnerParams, NodeIdentity, NodeMembershipParams, ProviderRouter,
    RetryPolicy, SentimentPool,
};
use bulwark_api::{ApiState, AppParams, build_app};
use bulwark_audit::{AuditRunner, AuditRunnerParams};
use bulwark_config::Config;
use bulwark_core::Liveness;
use bulwark_ml::{BatchingParams, ChaosKnobs, ScoringOptions};
use bulwark_store::{LocalQueue, Store, StoreParams};
use bulwark_supervisors::{
    BulwarkTree, IncidentSink, SentimentSettings, SupervisionSettings, TreeParams,
    install_panic_hook,
};
use poem::Server;
use poem::listener::Acceptor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;
use tracing::{error, info, warn};

use crate::engines::EnginePlan;
use crate::settings::{FromConfig, local_queue_params};

/// One running node: store, supervision tree and HTTP server.
#[derive(Debug)]
pub struct Service {
    pub addr: SocketAddr,
    /// `http://<addr>`, or `https://<addr>` when `[http.tls]` is set.
    pub base_url: String,
    pub store: Store,
    pub node_id: String,
    pub job_runner: JobRunnerHandle,
    pub sentiment: SentimentPool,
    /// The sentiment engines the workers serve, e.g. `onnx+lexicon`, or `lexicon` when degraded.
    pub sentiment_engines: String,
    pub max_attempts: u32,
    /// Reaches the provider actors; `None` when no provider is configured.
    pub providers: Option<bulwark_actors::ProviderRouter>,
    /// API keys and rate limits of this node's API.
    pub auth: Arc<bulwark_api::ApiAuth>,
    auth_upkeep_stop: tokio_util::sync::CancellationToken,
    auth_upkeep: JoinHandle<()>,
    /// PostgreSQL `LISTEN` for jobs queued by any node; `None` on SQLite.
    queued_jobs_listener: Option<AbortOnDropHandle<()>>,
    tree: BulwarkTree,
    incidents: IncidentSink,
    http_stop_tx: Option<oneshot::Sender<()>>,
    http_task: JoinHandle<std::io::Result<()>>,
    /// Set at the start of [`Service::shutdown`]: `/ready` answers 503 `draining` from then on.
    draining: bulwark_api::Draining,
    /// The overall shutdown deadline (`shutdown.timeout_ms`).
    shutdown_timeout: Duration,
    /// This node's name and incarnation in `nodes`, marked as left after a clean shutdown.
    identity: NodeIdentity,
    /// Registered names of the broker consumers, drained at shutdown; empty without a broker.
    broker_consumers: Vec<String>,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// `None` when no job runner was alive to drain.
    pub drain: Option<DrainReport>,
    /// Broker deliveries still in flight when the drain timed out (they return to their
    /// queues when the connections close).
    pub num_deliveries_unfinished: usize,
    /// From the start of the shutdown to the database pool closed.
    pub duration: Duration,
}

/// What the shutdown deadline keeps, after the drain, for the HTTP server's last requests, the
/// supervision tree and the database pool: a fifth of it, at most 5 s.
fn teardown_reserve(deadline: Duration) -> Duration {
    (deadline / 5).min(Duration::from_secs(5))
}

/// How long after a forced exit the jobs it released become runnable again.
const FORCED_RELEASE_DELAY_MS: i64 = 1_000;

/// Hands a node's jobs back to the queue when the process must exit before its graceful
/// shutdown ends: on a second signal, or past the shutdown deadline. It holds only the store
/// and the node's lease owner name, so it outlives the [`Service`] it was taken from.
#[derive(Debug, Clone)]
pub struct LeaseRelease {
    store: Store,
    owner: String,
}

impl LeaseRelease {
    /// Releases every job this node still holds, waiting at most `within`; the leases of the
    /// ones it could not release expire, and other nodes run them then. Returns how many were
    /// released.
    pub async fn release_all(&self, within: Duration) -> u64 {
        // Runnable again a second from now, by which time this process is gone: its runner may
        // still be claiming (a drain it was sent can be unread), and must not take them back.
        let runnable_at_ms = bulwark_core::now_ms() + FORCED_RELEASE_DELAY_MS;
        let release = self
            .store
            .release_jobs_of_owner(&self.owner, runnable_at_ms);
        match tokio::time::timeout(within, release).await {
            Ok(Ok(num_released)) => num_released,
            Ok(Err(error)) => {
                error!(%error, "failed to release this node's jobs, their leases will expire");
                0
            }
            Err(_) => {
                error!(
                    within_ms = within.as_millis() as u64,
                    "releasing this node's jobs took too long, their leases will expire"
                );
                0
            }
        }
    }
}

/// Returns a node name unique on this machine: host name, process id and a random suffix.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let suffix = &uuid::Uuid::now_v7().simple().to_string()[24..];
    format!("{host}-{}-{suffix}", std::process::id())
}

/// Opens the store described by the config and applies migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&StoreParams::from_config(config))
        .await
        .with_context(|| format!("failed to open the database at {}", config.database.url))
}

/// Opens the node membership's own small pool beside the main one: heartbeats must not wait
/// behind jobs for a connection, or a node whose queries are only slow (a saturated pool, a
/// slow network) looks silent to the others and is fenced while it works. On SQLite (one node,
/// one writer) the main pool serves.
async fn open_membership_store(config: &Config, store: &Store) -> anyhow::Result<Store> {
    if store.backend() == bulwark_store::Backend::Sqlite {
        return Ok(store.clone());
    }
    Store::connect(&StoreParams {
        max_connections: MEMBERSHIP_CONNECTIONS,
        ..StoreParams::from_config(config)
    })
    .await
    .with_context(|| {
        format!(
            "failed to open the membership's connection to the database at {}",
            config.database.url
        )
    })
}

/// Connections of the membership's pool: a heartbeat and a sweep at most at once.
const MEMBERSHIP_CONNECTIONS: u32 = 2;

/// Returns the sentiment subsystem's settings: the workers `[sentiment]` asks for, serving the
/// engines the plan chose.
fn sentiment_settings(config: &Config, engine_plan: &EnginePlan) -> SentimentSettings {
    SentimentSettings {
        num_workers: config.sentiment.num_workers(),
        model_factory: engine_plan.factory.clone(),
        engine: engine_plan.engines.clone(),
        default_options: ScoringOptions::from_config(config),
        batching: BatchingParams::from_config(config),
        call_timeout: config.sentiment.call_timeout(),
        chaos: ChaosKnobs::from_config(config),
    }
}

/// Returns what builds the job runner's params once the tree has made the sentiment pool:
/// `[jobs]`, and with providers configured, the audit runner beside the sentiment executor.
fn job_runner_factory(
    config: &Config,
    store: &Store,
    transport: Arc<LocalQueue>,
    node: NodeParts,
) -> Box<dyn FnOnce(SentimentPool) -> JobRunnerParams + Send> {
    let NodeParts {
        providers_opt,
        controls,
        in_flight,
    } = node;
    let runner_store = store.clone();
    let audit_store = store.clone();
    let executor_store = store.clone();
    let audit_concurrency = config.audits.concurrency as usize;
    let concurrency = config.jobs.concurrency;
    let poll_interval = config.jobs.poll_interval();
    let lease = config.jobs.lease();
    let retry = RetryPolicy::from_config(config);
    Box::new(move |sentiment| JobRunnerParams {
        transport,
        store: runner_store,
        executor: match providers_opt {
            Some(router) => {
                let audits = AuditRunner::new(AuditRunnerParams {
                    store: audit_store,
                    providers: Arc::new(router.clone()),
                    sentiment: Arc::new(sentiment.clone()),
                    concurrency: audit_concurrency,
                });
                JobExecutor::new(sentiment)
                    .with_store(executor_store)
                    .with_providers(router)
                    .with_audits(audits)
            }
            None => JobExecutor::new(sentiment).with_store(executor_store),
        },
        concurrency,
        poll_interval,
        lease,
        retry,
        in_flight,
        draining: Arc::new(AtomicBool::new(false)),
        liveness: Liveness::default(),
        controls,
    })
}

/// What every part of a node that creates or runs jobs shares: its name, its job controls and
/// the defaults its jobs get.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub node_id: String,
    pub controls: JobControls,
    pub job_defaults: bulwark_core::JobDefaults,
}

/// What a node's job runner shares with the rest of the node.
struct NodeParts {
    providers_opt: Option<ProviderRouter>,
    controls: JobControls,
    /// The runner's jobs, which the node's membership aborts if the node was fenced.
    in_flight: InFlightJobs,
}

/// Returns the HTTP app's params from `[http]`, served at `public_url`.
fn app_params(config: &Config, public_url: &str) -> AppParams {
    AppParams {
        max_body_bytes: config.http.max_body_bytes,
        public_url: public_url.to_owned(),
        browser: bulwark_api::BrowserParams {
            cors_allowed_origins: config.http.cors_allowed_origins.clone(),
            hsts_max_age_secs_opt: config.http.tls.as_ref().map(|tls| tls.hsts_max_age_secs),
        },
    }
}

impl Service {
    /// Starts a node: store (migrated), supervision tree, then the HTTP listener.
    pub async fn start(config: &Config) -> anyhow::Result<Service> {
        let started = Instant::now();
        install_panic_hook();
        let prometheus = crate::telemetry::prometheus()?;
        let store = open_store(config).await?;
        let membership_store = open_membership_store(config, &store).await?;
        let node_id = config.jobs.node_id.clone().unwrap_or_else(default_node_id);
        let controls = JobControls {
            cancel_grace: config.jobs.cancel_grace(),
            ..JobControls::default()
        };
        let paused_kinds = controls.paused.clone();
        let node = NodeContext {
            node_id: node_id.clone(),
            controls: controls.clone(),
            job_defaults: crate::settings::job_defaults(config)?,
        };
        bulwark_actors::metrics::KindLimitsEnforced {
            gates: &node.job_defaults.gates(),
        }
        .emit();
        let broker = crate::broker::broker_setup(config, &store, &node).await;
        let transport = Arc::new(LocalQueue::new(
            store.clone(),
            local_queue_params(config, &node_id, &node.job_defaults),
        ));
        let env: HashMap<String, String> = std::env::vars().collect();
        let project_root =
            std::env::current_dir().context("failed to read the working directory")?;
        let engine_plan = crate::engines::plan(config, &env, &project_root);
        let auth = crate::keys::api_auth(config, &store, &env).await?;
        let auth_upkeep_stop = tokio_util::sync::CancellationToken::new();
        let auth_upkeep = auth.spawn_upkeep(auth_upkeep_stop.clone());
        let incidents = crate::incidents::start_sink(config, &node_id, &env);
        let providers = crate::providers::providers_settings(config, &env)?;
        let provider_router_opt = providers.as_ref().map(|settings| settings.router(&node_id));
        let in_flight = InFlightJobs::default();
        let identity = NodeIdentity::new(&node_id);
        let job_runner = job_runner_factory(
            config,
            &store,
            transport,
            NodeParts {
                providers_opt: provider_router_opt.clone(),
                controls: controls.clone(),
                in_flight: in_flight.clone(),
            },
        );
        let tree = BulwarkTree::start(TreeParams {
            instance: node_id.clone(),
            supervision: SupervisionSettings::from_config(config),
            sentiment: sentiment_settings(config, &engine_plan),
            job_runner,
            membership: NodeMembershipParams {
                store: membership_store.clone(),
                identity: identity.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                heartbeat: config.jobs.node_heartbeat(),
                dead_after: config.jobs.node_dead_after(),
                in_flight,
                liveness: Liveness::default(),
            },
            scheduler: crate::scheduling::scheduler_factory(
                config,
                &store,
                &node,
                broker.as_ref().map(|setup| setup.intake.clone()),
            ),
            dead_letters: crate::scheduling::dead_letter_factory(
                config,
                &store,
                broker
                    .as_ref()
                    .and_then(|setup| setup.intake.publisher().cloned()),
            ),
            retention: crate::scheduling::pruner_params(config, &store),
            control: JobControlParams {
                store: store.clone(),
                controls,
                interval: config.jobs.control_interval(),
                liveness: Liveness::default(),
            },
            ingress: broker.as_ref().map(|setup| setup.ingress_factory()),
            providers,
        })
        .await
        .context("failed to start the supervision tree")?;
        // Other nodes' inserts (and the API's, through the trigger) wake this runner at once.
        let queued_jobs_listener = store
            .spawn_queued_jobs_listener({
                let job_runner = tree.job_runner.clone();
                move || job_runner.notify()
            })
            .map(AbortOnDropHandle::new);

        let acceptor = crate::listener::bind(&config.http).await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|local| local.as_socket_addr().copied())
            .context("listener has no socket address")?;
        let scheme = if config.http.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base_url = format!("{scheme}://{addr}");
        let draining = bulwark_api::Draining::default();
        let state = ApiState {
            store: store.clone(),
            sentiment: tree.sentiment.clone(),
            job_runner: tree.job_runner.clone(),
            intake: match &broker {
                Some(setup) => setup.intake.clone(),
                None => JobIntake::local(store.clone(), tree.job_runner.clone()),
            },
            root_supervisor: tree.root.clone(),
            metrics: Some(Arc::new(crate::telemetry::NodeMetrics::new(
                prometheus,
                store.clone(),
                incidents.dir(),
            ))),
            job_defaults: node.job_defaults.clone(),
            audit_providers: provider_router_opt
                .as_ref()
                .map(bulwark_actors::ProviderRouter::provider_names)
                .unwrap_or_default(),
            node_id: node_id.clone(),
            started_at: Instant::now(),
            dependency_timeout: Duration::from_secs(2),
            sentiment_engines: engine_plan.engines.clone(),
            sentiment_model_version: engine_plan.model_version.clone(),
            sentiment_degraded_reason: engine_plan.degraded_reason.clone(),
            incidents: Some(incidents.clone()),
            auth: auth.clone(),
            scheduler: tree.scheduler.clone(),
            dead_letters: tree.dead_letters.clone(),
            providers: provider_router_opt.clone(),
            paused_kinds: paused_kinds.clone(),
            draining: draining.clone(),
        };
        let app = build_app(state, &app_params(config, &base_url));
        let (http_stop_tx, http_stop_rx) = oneshot::channel::<()>();
        let http_task = tokio::spawn(
            Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
                app,
                async move {
                    let _ = http_stop_rx.await;
                },
                Some(Duration::from_secs(10)),
            ),
        );
        crate::telemetry::ConfigInUse { config }.emit();
        let startup = started.elapsed();
        crate::telemetry::NodeStarted { duration: startup }.emit();
        info!(
            %addr,
            node_id,
            backend = store.backend().as_str(),
            startup_ms = startup.as_millis() as u64,
            "bulwark is serving"
        );
        Ok(Service {
            addr,
            base_url,
            store,
            node_id,
            job_runner: tree.job_runner.clone(),
            sentiment: tree.sentiment.clone(),
            sentiment_engines: engine_plan.engines.clone(),
            max_attempts: config.jobs.max_attempts,
            providers: provider_router_opt,
            auth,
            auth_upkeep_stop,
            auth_upkeep,
            queued_jobs_listener,
            tree,
            incidents,
            http_stop_tx: Some(http_stop_tx),
            http_task,
            draining,
            shutdown_timeout: config.shutdown.timeout(),
            identity,
            broker_consumers: broker
                .as_ref()
                .map(|setup| setup.consumer_names())
                .unwrap_or_default(),
        })
    }

    /// Returns the sink incidents of this node are reported to.
    pub fn incidents(&self) -> &IncidentSink {
        &self.incidents
    }

    /// Returns the root supervisor, for operator controls and tests.
    pub fn root_supervisor(&self) -> &ractor::ActorRef<bulwark_supervisors::SupervisorMsg> {
        &self.tree.root
    }

    /// Returns the root supervisor's task; it ends only if the whole tree gave up.
    pub fn root_finished(&mut self) -> &mut JoinHandle<()> {
        &mut self.tree.root_handle
    }

    /// Returns what hands this node's jobs back to the queue if the process must exit before
    /// [`Service::shutdown`] ends.
    pub fn lease_release(&self) -> LeaseRelease {
        LeaseRelease {
            store: self.store.clone(),
            owner: self.node_id.clone(),
        }
    }

    /// Returns the overall shutdown deadline (`shutdown.timeout_ms`).
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// Shuts the node down within `shutdown.timeout_ms`: `/ready` answers 503 `draining` at
    /// once while the listener keeps serving; running jobs and broker deliveries get the
    /// deadline less a teardown reserve to finish, and the rest go back to the queue; then the
    /// listener closes after its requests in flight, the supervision tree stops and the
    /// database pool closes, each within what is left of the deadline.
    pub async fn shutdown(mut self) -> anyhow::Result<ShutdownReport> {
        let started = Instant::now();
        let deadline = started + self.shutdown_timeout;
        self.draining.begin();
        let drain_budget = self
            .shutdown_timeout
            .saturating_sub(teardown_reserve(self.shutdown_timeout));
        info!(
            timeout_ms = self.shutdown_timeout.as_millis() as u64,
            drain_ms = drain_budget.as_millis() as u64,
            "shutting down: draining"
        );
        let (drain, num_deliveries_unfinished) = tokio::join!(
            self.job_runner.drain(drain_budget),
            bulwark_broker::drain_consumers(&self.broker_consumers, drain_budget),
        );
        if !self.broker_consumers.is_empty() {
            info!(num_deliveries_unfinished, "broker consumers drained");
        }
        match &drain {
            Some(report) => info!(
                num_finished = report.num_finished,
                num_released = report.num_released,
                "job runner drained"
            ),
            None => warn!("no job runner was running to drain"),
        }
        let left = || deadline.saturating_duration_since(Instant::now());
        if let Some(http_stop_tx) = self.http_stop_tx.take() {
            let _ = http_stop_tx.send(());
        }
        match tokio::time::timeout(left(), &mut self.http_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => error!(%error, "http server stopped with an error"),
            Ok(Err(error)) => error!(%error, "http server task failed"),
            Err(_) => {
                warn!("requests still in flight at the shutdown deadline were cut");
                self.http_task.abort();
            }
        }
        self.tree.root.stop(Some("shutdown".to_owned()));
        // A tree that stopped on its own (the root gave up) was already awaited by the caller
        // (`root_finished`); a finished handle must not be polled again.
        if !self.tree.root_handle.is_finished()
            && tokio::time::timeout(left(), &mut self.tree.root_handle)
                .await
                .is_err()
        {
            warn!("the supervision tree did not stop before the shutdown deadline");
        }
        self.auth_upkeep_stop.cancel();
        if tokio::time::timeout(left().min(Duration::from_secs(2)), &mut self.auth_upkeep)
            .await
            .is_err()
        {
            warn!("api key upkeep did not stop in time");
        }
        drop(self.queued_jobs_listener.take());
        // After the tree stopped: no heartbeat can bring the node back to life.
        let incarnation = self.identity.incarnation();
        let leave = self.store.leave_node(self.identity.node_id(), &incarnation);
        match tokio::time::timeout(left().min(Duration::from_secs(2)), leave).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => warn!(%error, "failed to mark this node as left"),
            Err(_) => warn!("marking this node as left took too long"),
        }
        IncidentSink::unregister(&self.node_id);
        drop(self.incidents);
        if tokio::time::timeout(left(), self.store.close())
            .await
            .is_err()
        {
            warn!("the database pool did not close before the shutdown deadline");
        }
        let duration = started.elapsed();
        crate::telemetry::NodeStopped { duration }.emit();
        let (num_finished, num_released) = drain
            .as_ref()
            .map_or((0, 0), |report| (report.num_finished, report.num_released));
        info!(
            duration_ms = duration.as_millis() as u64,
            num_finished, num_released, num_deliveries_unfinished, "shutdown complete"
        );
        Ok(ShutdownReport {
            drain,
            num_deliveries_unfinished,
            duration,
        })
    }
}
