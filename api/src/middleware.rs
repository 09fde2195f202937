use std::sync::Arc;
use std::time::Instant;

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response, Result};
use poem_openapi::OperationId;
use tracing::{Instrument, info, info_span};
use uuid::Uuid;

use bulwark_core::{ErrorCode, HandledMessage, TraceContext};
use bulwark_supervisors::{IncidentKind, IncidentReport, IncidentSink};

use crate::browser::BrowserPolicy;
use crate::document::ApiDocument;
use crate::error::ApiError;
use crate::metrics::HttpRequestFinished;
use crate::state::Draining;

/// The request id of the current request, in request extensions for handlers (`Data<&RequestId>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

const REQUEST_ID_HEADER: &str = "x-request-id";
const MAX_REQUEST_ID_LEN: usize = 128;

/// Wraps every request: accepts or generates the request id, opens the span every log line of
/// the request carries, enforces the body limit, turns errors into the one error body, adds
/// security headers and records metrics.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub max_body_bytes: usize,
    /// Where a `500 INTERNAL_ERROR` is reported as an incident.
    pub incidents: Option<IncidentSink>,
    /// CSP, caching, HSTS and CORS headers.
    pub(crate) browser: Arc<BrowserPolicy>,
    /// The served document: a `405` lists the methods it documents for the path in `Allow`.
    pub(crate) document: Arc<ApiDocument>,
    /// While the node drains, every answer says `Connection: close`, so keep-alive clients
    /// reconnect, through their load balancer, to a node that stays.
    pub(crate) draining: Draining,
}

impl<E: Endpoint> Middleware<E> for RequestContext {
    type Output = RequestContextEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestContextEndpoint {
            inner: Arc::new(inner),
            max_body_bytes: self.max_body_bytes,
            incidents: self.incidents.clone(),
            browser: self.browser.clone(),
            document: self.document.clone(),
            draining: self.draining.clone(),
        }
    }
}

#[derive(Debug)]
pub struct RequestContextEndpoint<E> {
    inner: Arc<E>,
    max_body_bytes: usize,
    incidents: Option<IncidentSink>,
    browser: Arc<BrowserPolicy>,
    document: Arc<ApiDocument>,
    draining: Draining,
}

impl<E: Endpoint> Endpoint for RequestContextEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> Result<Self::Output> {
        let started = Instant::now();
        let request_id =
            accepted_request_id(&request).unwrap_or_else(|| Uuid::now_v7().to_string());
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let inbound = inbound_trace(&request);
        let allowed_origin_opt = self.browser.allowed_origin(&request);
        // An HTTP server span (OpenTelemetry's HTTP conventions) continuing the caller's
        // trace; named for its route once the route is known.
        let span = info_span!(
            "http_request",
            otel.name = %method,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            url.path = %path,
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            request_id = %request_id,
            method = %method,
            path = %path,
            key = tracing::field::Empty,
        );
        inbound.adopt_as_parent(&span);
        let trace_id_opt = TraceContext::of_span(&span).unwrap_or(inbound).trace_id();
        request
            .extensions_mut()
            .insert(RequestId(request_id.clone()));
        let caller = bulwark_actors::CallerIds {
            request_id: Some(request_id.clone()),
            trace_id: trace_id_opt.clone(),
            span_trace_opt: None,
        };
        async move {
            // A CORS preflight carries no credentials: it is answered here, before any key
            // is asked for.
            let outcome = match self.browser.preflight(&request) {
                Some(preflight) => preflight.map_err(Into::into),
                None => match limit_body(&mut request, self.max_body_bytes).await {
                    Ok(()) => bulwark_actors::with_caller(caller, self.inner.call(request))
                        .await
                        .map(IntoResponse::into_response),
                    Err(error) => Err(error.into()),
                },
            };
            let (mut response, route) = match outcome {
                Ok(response) => {
                    let route = response
                        .data::<OperationId>()
                        .map(|id| id.0)
                        .unwrap_or("other");
                    (response, route)
                }
                Err(error) => {
                    let route = error
                        .data::<OperationId>()
                        .map(|id| id.0)
                        .unwrap_or("other");
                    let api_error = ApiError::from_poem(&error);
                    if api_error.code == ErrorCode::InternalError
                        && let Some(incidents) = &self.incidents
                    {
                        report_api_incident(
                            incidents,
                            &api_error,
                            ApiIncidentContext {
                                route,
                                method: method.as_str(),
                                path: &path,
                                request_id: &request_id,
                                trace_id_opt: trace_id_opt.clone(),
                            },
                        );
                    }
                    let mut response = api_error.into_response_for(&request_id);
                    if response.status() == StatusCode::METHOD_NOT_ALLOWED
                        && let Some(allow) = self.document.allow_for(&path)
                    {
                        response.headers_mut().insert(header::ALLOW, allow);
                    }
                    (response, route)
                }
            };
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                headers.insert(REQUEST_ID_HEADER, value);
            }
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            self.browser.apply(&path, allowed_origin_opt, headers);
            if self.draining.is_draining() {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            let status = response.status().as_u16();
            let elapsed = started.elapsed();
            let span = tracing::Span::current();
            bulwark_core::rename_span(&span, format!("{method} {route}"));
            span.record("http.route", route);
            span.record("http.response.status_code", status);
            if status >= 500 {
                span.record("otel.status_code", "error");
            }
            HttpRequestFinished {
                route,
                method: method.as_str(),
                status,
                duration: elapsed,
            }
            .emit();
            if route != "metrics" && route != "live" && route != "ready" {
                info!(
                    status,
                    duration_us = elapsed.as_micros() as u64,
                    "request finished"
                );
            }
            Ok(response)
        }
        .instrument(span)
        .await
    }
}

/// Where an unhandled API error happened.
struct ApiIncidentContext<'a> {
    route: &'static str,
    method: &'a str,
    path: &'a str,
    request_id: &'a str,
    trace_id_opt: Option<String>,
}

/// Reports a `500 INTERNAL_ERROR` as an incident; never waits.
fn report_api_incident(
    incidents: &IncidentSink,
    error: &ApiError,
    context: ApiIncidentContext<'_>,
) {
    incidents.report(IncidentReport {
        kind: IncidentKind::ApiError,
        subsystem: "api".to_owned(),
        actor_path: format!("api/{}", context.route),
        supervisor: None,
        message: error.message.clone(),
        backtrace: None,
        handled: Some(HandledMessage::new(
            "http_request",
            format!("{} {}", context.method, context.path),
        )),
        request_id: Some(context.request_id.to_owned()),
        trace_id: context.trace_id_opt,
    });
}

/// Returns the caller's W3C `traceparent` and `tracestate` headers.
fn inbound_trace(request: &Request) -> TraceContext {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    TraceContext {
        traceparent: header("traceparent"),
        tracestate: header("tracestate"),
    }
}

/// Returns the client's request id if it is short and made of safe characters.
fn accepted_request_id(request: &Request) -> Option<String> {
    let value = request.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let valid = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:/".contains(&byte));
    valid.then(|| value.to_owned())
}

/// Rejects bodies over the limit with 413, whether announced by `Content-Length` or not.
async fn limit_body(request: &mut Request, max_body_bytes: usize) -> Result<(), ApiError> {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
    ) {
        return Ok(());
    }
    let too_large = || {
        ApiError::payload_too_large(format!(
            "request body is larger than {max_body_bytes} bytes"
        ))
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if announced.is_some_and(|length| length > max_body_bytes) {
        return Err(too_large());
    }
    let body = request.take_body();
    let bytes = body
        .into_bytes_limit(max_body_bytes)
        .await
        .map_err(|error| match error {
            poem::error::ReadBodyError::PayloadTooLarge => too_large(),
            other => ApiError::malformed(format!("failed to read request body: {other}")),
        })?;
    request.set_body(Body::from(bytes));
    Ok(())
}
