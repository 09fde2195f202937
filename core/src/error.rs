use std::fmt;

use serde::{Deserialize, Serialize};

/// The error taxonomy: every error a client or an operator sees carries one of these codes,
/// in HTTP bodies and in the `error_code` of failed jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationFailed,
    ResourceNotFound,
    Conflict,
    PayloadTooLarge,
    RateLimitExceeded,
    UpstreamTimeout,
    Overloaded,
    ServiceUnavailable,
    InternalError,
    /// No or a malformed operator token.
    Unauthorized,
    /// A token that does not grant the action, or operator controls are disabled.
    Forbidden,
    /// A job ran past its `timeout_ms` and was aborted.
    JobTimeout,
    /// A job was cancelled on request; never retried.
    Cancelled,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationFailed => "VALIDATION_FAILED",
            ErrorCode::ResourceNotFound => "RESOURCE_NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::JobTimeout => "JOB_TIMEOUT",
            ErrorCode::Cancelled => "CANCELLED",
        }
    }

    /// Returns true when the same request may succeed later: the client should retry after
    /// `Retry-After`, and a job is queued again with backoff.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimitExceeded
                | ErrorCode::UpstreamTimeout
                | ErrorCode::Overloaded
                | ErrorCode::ServiceUnavailable
                | ErrorCode::InternalError
                | ErrorCode::JobTimeout
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Why one job attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct JobError {
    pub code: ErrorCode,
    pub message: String,
}

impl JobError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        JobError {
            code,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the wire names match the serde names, so stored codes and HTTP bodies agree.
    #[test]
    fn codes_serialize_as_their_names() {
        for code in [
            ErrorCode::ValidationFailed,
            ErrorCode::Overloaded,
            ErrorCode::InternalError,
            ErrorCode::JobTimeout,
            ErrorCode::Cancelled,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        assert!(!ErrorCode::ValidationFailed.is_retryable());
        assert!(ErrorCode::Overloaded.is_retryable());
        assert!(!ErrorCode::Cancelled.is_retryable());
    }
}
