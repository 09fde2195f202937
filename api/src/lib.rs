//! Bulwark's HTTP API: OpenAPI 3 operations on poem-openapi, the request middleware, and the
//! one error body. It knows the actors' handles and the store; the binary wires it.
//!
//! # Layout
//! - `routes`: the operations, by tag (`sentiment`, `jobs` and `job_batches`, `health`).
//! - `auth`: [`Authenticate`] (keys, per-IP limits) and the scope types operations take.
//! - `middleware`: [`RequestContext`]: request ids, body limit, error rendering, metrics.
//! - `browser`: [`BrowserParams`] and the policy behind CSP, `Cache-Control`, HSTS and CORS.
//! - `strict_json`: [`StrictJson`](strict_json::StrictJson), request bodies checked against
//!   their documented schema (no coercion, no unknown field).
//! - `document`: the served OpenAPI document and the `Allow` value of each path.
//! - `error`: [`ApiError`] and [`ErrorBody`], the only mapping from errors to responses: every
//!   domain error (store, pool, job, auth, scheduler, requeue, supervisor control) converts here.
//! - `state`: [`ApiState`], what handlers reach.
//! - `metrics`: metric names and events.

pub mod auth;
mod browser;
mod document;
mod error;
pub mod metrics;
mod middleware;
mod routes;
mod state;
mod strict_json;

use std::sync::Arc;

use poem::endpoint::make_sync;
use poem::web::Html;
use poem::{Endpoint, EndpointExt, Response, Route};
use poem_openapi::{OpenApiService, Tags};

pub use auth::{ApiAuth, Authenticate, OpenEndpoints};
pub use browser::BrowserParams;
use document::ApiDocument;
pub use error::{ApiError, ErrorBody};
pub use middleware::{RequestContext, RequestId};
pub use state::{ApiState, Draining};

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
    /// Make, list, rotate and revoke API keys.
    Keys,
}

/// What the HTTP app is built with.
#[derive(Debug, Clone)]
pub struct AppParams {
    pub max_body_bytes: usize,
    /// The base URL shown in the OpenAPI document, e.g. `http://127.0.0.1:8080`.
    pub public_url: String,
    /// CORS origins and HSTS.
    pub browser: BrowserParams,
}

/// Every operation group of the API, in the order the document lists them.
type Apis = (
    routes::sentiment::SentimentApi,
    routes::jobs::JobsApi,
    routes::job_batches::JobBatchesApi,
    routes::job_graphs::JobGraphsApi,
    routes::job_control::JobControlApi,
    routes::health::HealthApi,
    routes::incidents::IncidentsApi,
    routes::ops::OpsApi,
    routes::schedules::SchedulesApi,
    routes::dead_letters::DeadLettersApi,
    routes::audits::AuditsApi,
    routes::keys::KeysApi,
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
        routes::job_batches::JobBatchesApi {
            state: state.clone(),
        },
        routes::job_graphs::JobGraphsApi {
            state: state.clone(),
        },
        routes::job_control::JobControlApi {
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
        routes::keys::KeysApi {
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
    let generated = service.spec();
    let document = Arc::new(ApiDocument::new(&generated));
    let spec_json = document.json().to_owned();
    let spec = make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(spec_json.clone())
    });
    // Swagger UI embeds the document it shows; it shows the served one.
    let docs_html = service
        .swagger_ui_html()
        .replacen(&generated, document.json(), 1);
    let browser = Arc::new(browser::BrowserPolicy::new(
        &params.browser,
        &docs_html,
        &[bulwark_audit::report::STYLE],
    ));
    let docs = make_sync(move |_| Html(docs_html.clone()));
    Route::new()
        .nest("/", service)
        .at("/openapi.json", spec)
        .at("/docs", docs)
        .with(Authenticate {
            auth: state.auth.clone(),
        })
        .with(RequestContext {
            max_body_bytes: params.max_body_bytes,
            incidents: state.incidents.clone(),
            browser,
            document,
            draining: state.draining.clone(),
        })
}
