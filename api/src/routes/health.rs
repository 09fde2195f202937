use std::sync::Arc;

use bulwark_auth::Scope;
use bulwark_supervisors::{SupervisorSnapshot, observe_supervisor};
use poem::Request;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use tracing::warn;

use crate::ApiTags;
use crate::auth::authorize_unless_open;
use crate::error::ApiResult;
use crate::metrics::ReadinessChecked;
use crate::state::ApiState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ComponentStatus {
    Up,
    /// Working with reduced capacity.
    Degraded,
    Down,
}

/// The state of one dependency or subsystem.
#[derive(Debug, Clone, Object)]
pub struct Component {
    pub name: String,
    pub status: ComponentStatus,
    pub detail: String,
}

/// Readiness: whether this node can take work now.
#[derive(Debug, Clone, Object)]
pub struct Readiness {
    /// `ready`; `not_ready` when a component it cannot serve without is down; `draining` once
    /// the node has begun to shut down (it still finishes what it started).
    pub status: String,
    /// Components that are down.
    pub failing: Vec<Component>,
    /// Components working with reduced capacity (the node is still ready).
    pub degraded: Vec<Component>,
}

/// Restart counters of one supervisor and its children.
#[derive(Debug, Clone, Object)]
pub struct SupervisorHealth {
    pub name: String,
    pub strategy: String,
    pub restarts: u64,
    pub panics: u64,
    pub errors: u64,
    pub hangs: u64,
    pub escalations: u64,
    pub children_running: u32,
    pub children_total: u32,
    pub supervisors: Vec<SupervisorHealth>,
}

impl From<SupervisorSnapshot> for SupervisorHealth {
    fn from(snapshot: SupervisorSnapshot) -> Self {
        let children_running = snapshot
            .children
            .iter()
            .filter(|child| child.running)
            .count() as u32;
        let children_total = snapshot.children.len() as u32;
        let counters = snapshot.counters;
        SupervisorHealth {
            name: snapshot.name,
            strategy: snapshot.strategy.to_owned(),
            restarts: counters.restarts,
            panics: counters.panics,
            errors: counters.errors,
            hangs: counters.hangs,
            escalations: counters.escalations,
            children_running,
            children_total,
            supervisors: snapshot
                .children
                .into_iter()
                .filter_map(|child| child.supervisor.map(|nested| (*nested).into()))
                .collect(),
        }
    }
}

/// Component detail for operators.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Health {
    /// `up`, `degraded` or `down`: the worst of the components.
    pub status: ComponentStatus,
    pub version: String,
    pub node_id: String,
    pub uptime_seconds: u64,
    pub components: Vec<Component>,
    pub supervision: Option<SupervisorHealth>,
    /// The kinds paused (their jobs wait), as this node last read them from the store.
    pub paused_kinds: Vec<String>,
}

/// How long a client told to go elsewhere by `/ready` waits before it asks this node again.
const READY_RETRY_AFTER_SECS: u64 = 5;

#[derive(ApiResponse)]
enum ReadyResponse {
    /// The node can serve; `degraded` names what works with reduced capacity, such as a
    /// broker whose outage the outbox absorbs.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// A component the node cannot serve without is down (`failing` names it), or the node is
    /// draining before it stops (`status` is `draining`). `Retry-After` is in seconds.
    #[oai(status = 503)]
    NotReady(Json<Readiness>, #[oai(header = "Retry-After")] u64),
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// Up or degraded.
    #[oai(status = 200)]
    Healthy(Json<Health>),
    /// A component is down.
    #[oai(status = 503)]
    Unhealthy(Json<Health>),
}

#[derive(ApiResponse)]
enum MetricsResponse {
    /// Prometheus text exposition format.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4")]
    Metrics(PlainText<String>),
    /// No metrics recorder is installed in this process.
    #[oai(status = 503)]
    Unavailable(PlainText<String>),
}

#[derive(Debug, Clone, Object)]
pub struct Liveness {
    pub status: String,
}

pub struct HealthApi {
    pub state: Arc<ApiState>,
}

impl HealthApi {
    async fn components(&self) -> Vec<Component> {
        let state = &self.state;
        let database =
            match tokio::time::timeout(state.dependency_timeout, state.store.ping()).await {
                Ok(Ok(())) => component(
                    "database",
                    ComponentStatus::Up,
                    state.store.backend().as_str().to_owned(),
                ),
                // The driver's text can name hosts, users and paths: it goes to the log only.
                Ok(Err(error)) => {
                    warn!(%error, "health check: the database does not answer");
                    component(
                        "database",
                        ComponentStatus::Down,
                        "unreachable (details in the log)".to_owned(),
                    )
                }
                Err(_) => component(
                    "database",
                    ComponentStatus::Down,
                    format!("no answer within {:?}", state.dependency_timeout),
                ),
            };
        let num_running = state.sentiment.num_running_workers();
        let num_workers = state.sentiment.num_workers();
        let workers_status = match num_running {
            0 => ComponentStatus::Down,
            running if running < num_workers => ComponentStatus::Degraded,
            _ => ComponentStatus::Up,
        };
        let workers_detail = format!(
            "{num_running} of {num_workers} workers running, {} calls queued",
            state.sentiment.queued()
        );
        let runner_status = if state.job_runner.is_running() {
            ComponentStatus::Up
        } else {
            ComponentStatus::Down
        };
        // The load error names files and folders; it was logged at start-up.
        let engine = match &state.sentiment_degraded_reason {
            Some(_) => component(
                "sentiment_engine",
                ComponentStatus::Degraded,
                format!(
                    "serving {} only: the model or the ONNX Runtime could not be loaded (details \
                     in the start-up log); `make model` and `make runtime` fetch them",
                    state.sentiment_engines
                ),
            ),
            None => component(
                "sentiment_engine",
                ComponentStatus::Up,
                match &state.sentiment_model_version {
                    Some(version) => format!("{} ({version})", state.sentiment_engines),
                    None => state.sentiment_engines.clone(),
                },
            ),
        };
        let mut components = vec![
            database,
            component("sentiment_workers", workers_status, workers_detail),
            engine,
            component(
                "job_runner",
                runner_status,
                state.job_runner.name().to_owned(),
            ),
        ];
        if let Some(providers) = &state.providers {
            components.extend(providers.statuses().iter().map(provider_component));
        }
        // A broker outage degrades the node without stopping it: submissions are stored and
        // wait in the outbox, published once the link is back. Only the database, which the
        // outbox lives in, makes the node unable to serve.
        if let Some(publisher) = state.intake.publisher() {
            let connected = bulwark_actors::JobPublisher::is_connected(publisher.as_ref());
            components.push(if connected {
                component("broker", ComponentStatus::Up, "connected".to_owned())
            } else {
                component(
                    "broker",
                    ComponentStatus::Degraded,
                    "publisher or a consumer is not connected, reconnecting; submissions wait \
                     in the outbox"
                        .to_owned(),
                )
            });
        }
        components
    }
}

/// A provider is `degraded`, never `down`: a node whose provider's breaker is open or whose
/// provider actor is restarting still runs everything else, so it stays ready.
fn provider_component(status: &bulwark_actors::ProviderStatus) -> Component {
    let breaker = status.breaker_opt.map_or("none", |state| state.as_str());
    let healthy = status.running && breaker == "closed";
    component(
        &format!("provider:{}", status.name),
        if healthy {
            ComponentStatus::Up
        } else {
            ComponentStatus::Degraded
        },
        format!(
            "breaker {breaker}, actor {}",
            if status.running {
                "running"
            } else {
                "not running"
            }
        ),
    )
}

fn component(name: &str, status: ComponentStatus, detail: String) -> Component {
    Component {
        name: name.to_owned(),
        status,
        detail,
    }
}

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness: the process answers. Checks no dependency.
    #[oai(path = "/live", method = "get", operation_id = "live")]
    async fn live(&self) -> Json<Liveness> {
        Json(Liveness {
            status: "ok".to_owned(),
        })
    }

    /// Readiness: `503` naming the failing component when a dependency the node cannot serve
    /// without is down, and `503` `draining` from the moment the node begins to shut down.
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self) -> ReadyResponse {
        if self.state.draining.is_draining() {
            ReadinessChecked { is_ready: false }.emit();
            return ReadyResponse::NotReady(
                Json(Readiness {
                    status: "draining".to_owned(),
                    failing: Vec::new(),
                    degraded: Vec::new(),
                }),
                READY_RETRY_AFTER_SECS,
            );
        }
        let (failing, others): (Vec<Component>, Vec<Component>) = self
            .components()
            .await
            .into_iter()
            .partition(|component| component.status == ComponentStatus::Down);
        let degraded: Vec<Component> = others
            .into_iter()
            .filter(|component| component.status == ComponentStatus::Degraded)
            .collect();
        let status = if failing.is_empty() {
            "ready"
        } else {
            "not_ready"
        };
        let readiness = Json(Readiness {
            status: status.to_owned(),
            failing,
            degraded,
        });
        ReadinessChecked {
            is_ready: status == "ready",
        }
        .emit();
        if status == "ready" {
            ReadyResponse::Ready(readiness)
        } else {
            ReadyResponse::NotReady(readiness, READY_RETRY_AFTER_SECS)
        }
    }

    /// Health: every component's status and the supervisors' restart counters. Needs a key
    /// with the `read` scope unless `auth.open_endpoints` lists `health`.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self, request: &Request) -> ApiResult<HealthResponse> {
        authorize_unless_open(request, Scope::Read, |open| open.health).await?;
        let components = self.components().await;
        let status = if components
            .iter()
            .any(|component| component.status == ComponentStatus::Down)
        {
            ComponentStatus::Down
        } else if components
            .iter()
            .any(|component| component.status == ComponentStatus::Degraded)
        {
            ComponentStatus::Degraded
        } else {
            ComponentStatus::Up
        };
        let supervision = observe_supervisor(&self.state.root_supervisor)
            .await
            .map(Into::into);
        let health = Health {
            status,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            node_id: self.state.node_id.clone(),
            uptime_seconds: self.state.started_at.elapsed().as_secs(),
            components,
            supervision,
            paused_kinds: self.state.paused_kinds.list(),
        };
        if status == ComponentStatus::Down {
            Ok(HealthResponse::Unhealthy(Json(health)))
        } else {
            Ok(HealthResponse::Healthy(Json(health)))
        }
    }

    /// Prometheus metrics. Needs a key with the `read` scope unless `auth.open_endpoints`
    /// lists `metrics`.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, request: &Request) -> ApiResult<MetricsResponse> {
        authorize_unless_open(request, Scope::Read, |open| open.metrics).await?;
        Ok(match &self.state.metrics {
            Some(exporter) => MetricsResponse::Metrics(PlainText(exporter.render())),
            None => {
                MetricsResponse::Unavailable(PlainText("no metrics recorder installed".to_owned()))
            }
        })
    }
}
