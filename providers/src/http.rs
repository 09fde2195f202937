//! What the HTTP adapters share: the client with explicit timeouts, the API key that never
//! shows, and the mapping of HTTP failures onto [`ProviderError`].

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bulwark_core::TraceContext;
use reqwest::header::HeaderValue;
use reqwest::{Response, StatusCode};
use tracing::Instrument;

use crate::ProviderError;
use crate::wire::error_message;

/// An API key resolved from its reference. `Debug` and `Display` print `***`; only
/// [`ApiKey::expose`] returns it, for the one header that carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Returns `text` with every occurrence of the key replaced by `***`: upstreams echo keys
    /// back in error messages, and those messages reach logs, job rows and HTTP bodies.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_owned();
        }
        text.replace(&self.0, "***")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("***")
    }
}

/// What an HTTP adapter is built with.
#[derive(Debug, Clone)]
pub struct HttpProviderParams {
    /// The configured provider name.
    pub name: String,
    /// e.g. `https://api.openai.com/v1`, `https://api.anthropic.com/v1`, or a simulator's.
    pub base_url: String,
    pub model: String,
    pub api_key_opt: Option<ApiKey>,
    /// Answer budget for requests that set no `max_tokens` (Anthropic requires one).
    pub default_max_tokens: u32,
    pub connect_timeout: Duration,
    /// Longest wait for any read on the connection; the whole attempt is bounded by the
    /// resilience layer's per-attempt timeout.
    pub read_timeout: Duration,
    /// Largest answer body read; a larger one fails with [`ProviderError::ResponseTooLarge`]
    /// before it is buffered whole. Error bodies are cut at this size instead.
    pub max_response_bytes: usize,
    /// Accepts `http://` base URLs and redirects (the simulator, local servers); otherwise the
    /// client refuses anything but HTTPS.
    pub allow_plain_http: bool,
}

/// Returns a client with explicit connect and read timeouts and kept-alive connections.
pub fn build_client(params: &HttpProviderParams) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .connect_timeout(params.connect_timeout)
        .read_timeout(params.read_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .https_only(!params.allow_plain_http)
        .build()
        .map_err(|error| {
            ProviderError::ConnectionFailed(format!("failed to build client: {error}"))
        })
}

/// Sends a request and reads its successful answer as JSON of type `T`; a transport failure,
/// a non-2xx status or a body that is not a `T` (named `what` in the error) becomes the
/// [`ProviderError`] it means.
///
/// Each call is an HTTP client span (OpenTelemetry's HTTP conventions) whose context goes to
/// the provider in the `traceparent` and `tracestate` headers.
pub async fn send_for_json<T: serde::de::DeserializeOwned>(
    builder: reqwest::RequestBuilder,
    params: &HttpProviderParams,
    what: &str,
) -> Result<T, ProviderError> {
    let (client, request) = builder.build_split();
    let mut request = request.map_err(|error| transport_error(&error, params))?;
    let span = tracing::debug_span!(
        "provider.call",
        otel.name = %format_args!("{} {}", request.method(), params.name),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        server.address = request.url().host_str().unwrap_or(""),
        server.port = request.url().port_or_known_default().unwrap_or(0),
        url.path = request.url().path(),
        http.response.status_code = tracing::field::Empty,
        provider = %params.name,
    );
    if let Some(trace) = TraceContext::of_span(&span) {
        let headers = request.headers_mut();
        for (name, value_opt) in [
            ("traceparent", trace.traceparent),
            ("tracestate", trace.tracestate),
        ] {
            if let Some(value) = value_opt.and_then(|value| HeaderValue::from_str(&value).ok()) {
                headers.insert(name, value);
            }
        }
    }
    let answer = receive_json(client.execute(request), params, what)
        .instrument(span.clone())
        .await;
    if answer.is_err() {
        span.record("otel.status_code", "error");
    }
    answer
}

async fn receive_json<T: serde::de::DeserializeOwned>(
    sent: impl Future<Output = reqwest::Result<Response>>,
    params: &HttpProviderParams,
    what: &str,
) -> Result<T, ProviderError> {
    let response = sent
        .await
        .map_err(|error| transport_error(&error, params))?;
    tracing::Span::current().record("http.response.status_code", response.status().as_u16());
    if !response.status().is_success() {
        return Err(status_error(response, params).await);
    }
    let bytes = match read_body_limited(response, params.max_response_bytes).await {
        Ok(bytes) => bytes,
        Err(BodyReadError::TooLarge) => {
            return Err(ProviderError::ResponseTooLarge {
                provider: params.name.clone(),
                limit_bytes: params.max_response_bytes,
            });
        }
        Err(BodyReadError::Transport(error)) => return Err(transport_error(&error, params)),
    };
    serde_json::from_slice(&bytes).map_err(|error| {
        ProviderError::MalformedResponse(format!(
            "{what} from {} is not valid: {error}",
            params.name
        ))
    })
}

/// Why a body could not be read whole.
#[derive(Debug)]
enum BodyReadError {
    /// Announced or found larger than the limit; nothing past the limit was buffered.
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a body of at most `limit` bytes: an announced `Content-Length` over the limit is
/// refused before reading, and a body without one is cut off as soon as it passes the limit.
async fn read_body_limited(mut response: Response, limit: usize) -> Result<Vec<u8>, BodyReadError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(BodyReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyReadError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads at most `limit` bytes of an error body, dropping the rest: the status says what
/// happened, the body only adds the upstream's words.
async fn read_error_body(mut response: Response, limit: usize) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Maps a transport error (no complete answer) onto a [`ProviderError`].
pub fn transport_error(error: &reqwest::Error, params: &HttpProviderParams) -> ProviderError {
    let scrub = |text: String| match &params.api_key_opt {
        Some(key) => key.scrub(&text),
        None => text,
    };
    if error.is_timeout() {
        return ProviderError::Timeout(params.read_timeout);
    }
    if error.is_decode() {
        return ProviderError::MalformedResponse(scrub(error.to_string()));
    }
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ProviderError::ConnectionFailed(scrub(message))
}

/// Reads a non-2xx answer into the [`ProviderError`] it means.
pub async fn status_error(response: Response, params: &HttpProviderParams) -> ProviderError {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = read_error_body(response, params.max_response_bytes).await;
    let raw_message = error_message(&body);
    let message = match &params.api_key_opt {
        Some(key) => key.scrub(&raw_message),
        None => raw_message,
    };
    match status {
        StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited {
            message,
            retry_after,
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderError::Unauthorized(message),
        StatusCode::REQUEST_TIMEOUT => ProviderError::Upstream {
            status: status.as_u16(),
            message,
        },
        client if client.is_client_error() => ProviderError::BadRequest(message),
        other => ProviderError::Upstream {
            status: other.as_u16(),
            message,
        },
    }
}

/// Reads `retry-after-ms` (OpenAI), then `retry-after` in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<f64>().ok())
            .filter(|value| value.is_finite() && *value >= 0.0)
    };
    if let Some(millis) = read("retry-after-ms") {
        return Some(Duration::from_secs_f64(millis / 1_000.0));
    }
    read("retry-after").map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the key never shows in Debug or Display and is scrubbed from echoed messages.
    #[test]
    fn api_key_never_shows() {
        let key = ApiKey::new("sk-live-0123456789");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(key.to_string(), "***");
        assert_eq!(
            key.scrub("Incorrect API key provided: sk-live-0123456789."),
            "Incorrect API key provided: ***."
        );
    }

    /// Proves Retry-After is read in milliseconds first, then in seconds.
    #[test]
    fn retry_after_headers() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
    }
}
