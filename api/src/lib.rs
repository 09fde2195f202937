//! Bulwark's HTTP API: OpenAPI 3 operations on poem-openapi, the request middleware, and the
//! one error body. It knows the actors' handles and the store; the binary wires it.
//!
//! # Layout
//! - `routes`: the operations, by tag (`sentiment`, `jobs`, `health`).
//! - `audit_report`: audit reports as CSV and as a self-contained HTML page.
//! - `middleware`: [`RequestContext`]: request ids, body limit, error rendering, metrics.
//! - `error`: [`ApiError`] and [`ErrorBody`], the only mapping from errors to responses.
//! - `state`: [`ApiState`], what handlers reach.
//! - `metrics`: metric names and events.

mod audit_report;
mod error;
pub mod metrics;
mod middleware;
mod routes;
mod state;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};

pub use error::{ApiError, ErrorBody};
pub use middleware::{RequestContext, RequestId};
pub use routes::ops::OperatorToken;
pub use state::ApiState;

#[derive(Tags)]
enum ApiTags {
    /// Score texts now.
    Sentiment,
    /// Submit and inspect jobs.
    Jobs,
    /// Probes and metrics for operators.
    Operations,
    /// Ask AI answer engines about a brand and report how they speak of it.
    Audits,
    /// Create jobs on a cron, interval or one-time trigger.
    Schedules,
    /// Inspect, requeue, park and purge jobs that could not be done.
    DeadLetters,
}

/// What the HTTP app is built with.
#[derive(Debug, Clone)]
pub struct AppParams {
    pub max_body_bytes: usize,
    /// The base URL shown in the OpenAPI document, e.g. `http://127.0.0.1:8080`.
    pub public_url: String,
}

/// Every operation group of the API, in the order the document lists them.
type Apis = (
    routes::sentiment::SentimentApi,
    routes::jobs::JobsApi,
    routes::health::HealthApi,
    routes::incidents::IncidentsApi,
    routes::ops::OpsApi,
    routes::schedules::SchedulesApi,
    routes::dead_letters::DeadLettersApi,
    routes::audits::AuditsApi,
);

/// Returns the OpenAPI service with every operation.
fn openapi_service(state: &Arc<ApiState>, params: &AppParams) -> OpenApiService<Apis, ()> {
    let apis = (
        routes::sentiment::SentimentApi {
            state: state.clone(),
        },
        routes::jobs::JobsApi {
            state: state.clone(),
        },
        routes::health::HealthApi {
            state: state.clone(),
        },
        routes::incidents::IncidentsApi {
            state: state.clone(),
        },
        routes::ops::OpsApi {
            state: state.clone(),
        },
        routes::schedules::SchedulesApi {
            state: state.clone(),
        },
        routes::dead_letters::DeadLettersApi {
            state: state.clone(),
        },
        routes::audits::AuditsApi {
            state: state.clone(),
        },
    );
    OpenApiService::new(apis, "Bulwark", env!("CARGO_PKG_VERSION"))
        .description(
            "An actor-based worker system: sentiment analysis now, and jobs that are never lost.",
        )
        .server(params.public_url.clone())
}

/// Builds the whole HTTP app: operations, `/openapi.json`, Swagger UI at `/docs`.
pub fn build_app(state: ApiState, params: &AppParams) -> impl Endpoint + 'static {
    let state = Arc::new(state);
    let service = openapi_service(&state, params);
    let spec = service.spec_endpoint();
    let docs = service.swagger_ui();
    Route::new()
        .nest("/", service)
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .with(RequestContext {
            max_body_bytes: params.max_body_bytes,
            incidents: state.incidents.clone(),
        })
}
