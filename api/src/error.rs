use bulwark_actors::{ErrorCode, JobError, PoolError};
use bulwark_store::StoreError;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaResponse, MetaResponses, Registry};
use poem_openapi::{ApiResponse, Object, ResponseContent};
use tracing::error;

/// The one error body of the API.
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Deserialize)]
pub struct ErrorBody {
    /// A code from the error taxonomy, e.g. `VALIDATION_FAILED`.
    pub code: String,
    /// What went wrong, naming the offending field when there is one.
    pub message: String,
    /// The request id, as sent in `X-Request-ID` or generated.
    pub request_id: String,
    /// True when the same request may succeed later; `Retry-After` says when.
    pub retriable: bool,
}

/// An error as the API reports it. Handlers return it; the request middleware turns it, and
/// every other error, into a response with [`ApiError::into_response_for`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the body is not valid JSON or does not have the documented shape.
    pub fn malformed(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ValidationFailed,
            message,
        )
    }

    /// 422: well-formed input that breaks a rule; `message` starts with the field name.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ValidationFailed,
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ResourceNotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServiceUnavailable,
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            message,
        )
    }

    /// Maps a taxonomy code to its HTTP status.
    pub fn from_code(code: ErrorCode, message: impl Into<String>) -> Self {
        let status = match code {
            ErrorCode::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ResourceNotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Overloaded | ErrorCode::ServiceUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, code, message)
    }

    /// Seconds a client should wait before retrying, for retriable errors.
    fn retry_after_secs(&self) -> Option<u64> {
        match self.code {
            ErrorCode::Overloaded | ErrorCode::RateLimitExceeded | ErrorCode::UpstreamTimeout => {
                Some(1)
            }
            ErrorCode::ServiceUnavailable | ErrorCode::InternalError => Some(5),
            _ => None,
        }
    }

    /// Maps any error that reached the edge of the API to an [`ApiError`]: ours unchanged,
    /// poem's by status. This and [`ApiError::into_response_for`] are the only places errors
    /// become HTTP responses.
    pub fn from_poem(error: &poem::Error) -> ApiError {
        if let Some(api_error) = error.downcast_ref::<ApiError>() {
            return api_error.clone();
        }
        let message = error.to_string();
        match error.status() {
            StatusCode::BAD_REQUEST => ApiError::malformed(message),
            StatusCode::NOT_FOUND => ApiError::not_found(message),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::ValidationFailed,
                message,
            ),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(message),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::ValidationFailed,
                message,
            ),
            status if status.is_client_error() => {
                ApiError::new(status, ErrorCode::ValidationFailed, message)
            }
            _ => ApiError::internal(message),
        }
    }

    /// Renders the error body with the request id, and `Retry-After` when retriable.
    pub fn into_response_for(self, request_id: &str) -> Response {
        if self.status.is_server_error() {
            error!(
                code = self.code.as_str(),
                error = self.message,
                "request failed"
            );
        }
        let retriable = self.code.is_retryable();
        let retry_after_opt = self.retry_after_secs();
        let body = ErrorBody {
            code: self.code.as_str().to_owned(),
            message: self.message,
            request_id: request_id.to_owned(),
            retriable,
        };
        let mut response = Json(body).with_status(self.status).into_response();
        if let Some(retry_after) = retry_after_opt.filter(|_| retriable) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        ApiError::from_code(error.code, error.message)
    }
}

impl From<PoolError> for ApiError {
    fn from(error: PoolError) -> Self {
        ApiError::from_code(error.code(), error.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_retryable() {
            ApiError::unavailable(format!("the store is unavailable: {error}"))
        } else {
            ApiError::internal(format!("store error: {error}"))
        }
    }
}

/// Documents the error responses every operation may return, all with [`ErrorBody`].
impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let statuses: [(u16, &'static str); 8] = [
            (400, "Malformed request (VALIDATION_FAILED)"),
            (404, "Not found (RESOURCE_NOT_FOUND)"),
            (409, "Conflict with an existing resource (CONFLICT)"),
            (413, "Body larger than the limit (PAYLOAD_TOO_LARGE)"),
            (
                422,
                "Input breaks a rule; the message names the field (VALIDATION_FAILED)",
            ),
            (500, "Unexpected error (INTERNAL_ERROR)"),
            (503, "Overloaded or a dependency is down; see Retry-After"),
            (504, "A dependency timed out (UPSTREAM_TIMEOUT)"),
        ];
        MetaResponses {
            responses: statuses
                .into_iter()
                .map(|(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: <Json<ErrorBody> as ResponseContent>::media_types(),
                    headers: Vec::new(),
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        <Json<ErrorBody> as ResponseContent>::register(registry);
    }
}

/// The result type of every operation.
pub type ApiResult<T> = Result<T, ApiError>;
