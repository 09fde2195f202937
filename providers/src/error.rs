use std::time::Duration;

/// Why a provider did not answer. Messages name the provider and what happened, never the API
/// key: adapters scrub it from anything an upstream echoes back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The upstream answered 429, or this node's own rate limit for the provider is spent.
    #[error("rate limited: {message}")]
    RateLimited {
        message: String,
        /// When the upstream (`Retry-After`) or the local limiter says to try again.
        retry_after: Option<Duration>,
    },
    /// No answer within the per-attempt timeout or the per-call deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The upstream answered with an error status other than 401/403, 400-class or 429.
    #[error("upstream answered {status}: {message}")]
    Upstream { status: u16, message: String },
    /// The upstream answered 2xx with a body that is not the documented shape.
    #[error("malformed response: {0}")]
    MalformedResponse(String),
    /// The upstream answered 2xx with a body larger than the provider's `max_response_bytes`;
    /// the body was dropped unread past the limit. Retried like a malformed answer (a proxy's
    /// page or a faulty upstream, not something a completion bounded by `max_tokens` produces)
    /// and counted by the breaker, so an upstream that keeps doing it is cut off.
    #[error("response from provider {provider} is larger than {limit_bytes} bytes")]
    ResponseTooLarge {
        provider: String,
        limit_bytes: usize,
    },
    /// The breaker is open after repeated failures; calls fail fast until it probes again.
    #[error("circuit open for provider {provider}")]
    CircuitOpen {
        provider: String,
        retry_after: Option<Duration>,
    },
    /// Every concurrent-call slot is taken and the waiting line is full.
    #[error(
        "bulkhead full for provider {provider}: {max_concurrent} calls running, {max_waiting} waiting"
    )]
    BulkheadFull {
        provider: String,
        max_concurrent: usize,
        max_waiting: usize,
    },
    /// The TCP/TLS connection failed or was dropped before a full answer arrived.
    #[error("connection failed: {0}")]
    ConnectionFailed(String),
    /// The upstream refused the credentials (401 or 403).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The upstream refused the request itself (400-class other than 401/403/408/429).
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl ProviderError {
    /// Returns the stable code of this error, as stored with failed audit items and jobs.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "RATE_LIMITED",
            ProviderError::Timeout(_) => "UPSTREAM_TIMEOUT",
            ProviderError::Upstream { .. } => "UPSTREAM_ERROR",
            ProviderError::MalformedResponse(_) => "MALFORMED_RESPONSE",
            ProviderError::ResponseTooLarge { .. } => "RESPONSE_TOO_LARGE",
            ProviderError::CircuitOpen { .. } => "CIRCUIT_OPEN",
            ProviderError::BulkheadFull { .. } => "BULKHEAD_FULL",
            ProviderError::ConnectionFailed(_) => "CONNECTION_FAILED",
            ProviderError::Unauthorized(_) => "UNAUTHORIZED",
            ProviderError::BadRequest(_) => "BAD_REQUEST",
        }
    }

    /// Returns true when the same request may succeed later (a job is queued again).
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::RateLimited { .. }
            | ProviderError::Timeout(_)
            | ProviderError::MalformedResponse(_)
            | ProviderError::ResponseTooLarge { .. }
            | ProviderError::CircuitOpen { .. }
            | ProviderError::BulkheadFull { .. }
            | ProviderError::ConnectionFailed(_) => true,
            ProviderError::Upstream { status, .. } => *status >= 500 || *status == 408,
            ProviderError::Unauthorized(_) | ProviderError::BadRequest(_) => false,
        }
    }

    /// Returns true when another attempt of the same call, after a backoff, may succeed. Errors
    /// this node raised itself (open breaker, full bulkhead) are not retried within a call:
    /// retrying them would only hold the caller longer.
    pub fn is_retryable_attempt(&self) -> bool {
        match self {
            ProviderError::CircuitOpen { .. } | ProviderError::BulkheadFull { .. } => false,
            other => other.is_retryable(),
        }
    }

    /// Returns true when this failure says the upstream is unhealthy, so the breaker counts it.
    /// A 429 is back-pressure from a healthy upstream and client errors are ours: neither
    /// counts, and neither do the errors this node raised itself.
    pub fn counts_against_breaker(&self) -> bool {
        match self {
            ProviderError::Timeout(_)
            | ProviderError::MalformedResponse(_)
            | ProviderError::ResponseTooLarge { .. }
            | ProviderError::ConnectionFailed(_) => true,
            ProviderError::Upstream { status, .. } => *status >= 500,
            ProviderError::RateLimited { .. }
            | ProviderError::CircuitOpen { .. }
            | ProviderError::BulkheadFull { .. }
            | ProviderError::Unauthorized(_)
            | ProviderError::BadRequest(_) => false,
        }
    }

    /// Returns how long the upstream or this node asked callers to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. }
            | ProviderError::CircuitOpen { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the codes are stable and that only transient upstream failures are retried.
    #[test]
    fn codes_and_retry_classes() {
        let rate_limited = ProviderError::RateLimited {
            message: "slow down".to_owned(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(rate_limited.code(), "RATE_LIMITED");
        assert!(rate_limited.is_retryable_attempt());
        assert!(!rate_limited.counts_against_breaker());
        assert_eq!(rate_limited.retry_after(), Some(Duration::from_secs(2)));

        let server_error = ProviderError::Upstream {
            status: 503,
            message: "down".to_owned(),
        };
        assert!(server_error.is_retryable_attempt() && server_error.counts_against_breaker());
        let not_found = ProviderError::Upstream {
            status: 404,
            message: "no such model".to_owned(),
        };
        assert!(!not_found.is_retryable());

        let open = ProviderError::CircuitOpen {
            provider: "p".to_owned(),
            retry_after: None,
        };
        assert!(open.is_retryable() && !open.is_retryable_attempt());
        assert!(!ProviderError::Unauthorized("no".to_owned()).is_retryable());
        assert_eq!(
            ProviderError::BadRequest(String::new()).code(),
            "BAD_REQUEST"
        );
        let too_large = ProviderError::ResponseTooLarge {
            provider: "p".to_owned(),
            limit_bytes: 1024,
        };
        assert_eq!(too_large.code(), "RESPONSE_TOO_LARGE");
        assert!(too_large.is_retryable_attempt() && too_large.counts_against_breaker());
    }
}
