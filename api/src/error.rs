use bulwark_actors::{PoolError, RequeueError, SchedulerError};
use bulwark_auth::AuthError;
use bulwark_core::{ErrorCode, JobError};
use bulwark_store::StoreError;
use bulwark_supervisors::ControlError;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::error::{ParseParamError, ParsePathError};
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
    /// Overrides the code's default `Retry-After` (a rate limit knows when its bucket refills).
    retry_after_secs_opt: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs_opt: None,
        }
    }

    /// 400: the body is not valid JSON (a body of the wrong shape is [`ApiError::invalid`]).
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
            ErrorCode::Conflict | ErrorCode::Cancelled => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::UpstreamTimeout | ErrorCode::JobTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Overloaded | ErrorCode::ServiceUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, code, message)
    }

    /// Sets the seconds a client should wait before retrying.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_secs_opt = Some(seconds);
        self
    }

    /// Seconds a client should wait before retrying, for retriable errors.
    fn retry_after_secs(&self) -> Option<u64> {
        if self.retry_after_secs_opt.is_some() {
            return self.retry_after_secs_opt;
        }
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
        // A parameter of the wrong type or out of its documented bounds breaks a rule like a
        // body field does: 422 naming it.
        if let Some(param_error) = error.downcast_ref::<ParseParamError>() {
            return ApiError::invalid(format!("{}: {}", param_error.name, param_error.reason));
        }
        // A path segment that is not one of its documented values (a job kind): poem-openapi
        // names path parameters by position, so the message names the path.
        if let Some(path_error) = error.downcast_ref::<ParsePathError>() {
            return ApiError::invalid(format!("path: {}", path_error.reason));
        }
        let message = error.to_string();
        match error.status() {
            StatusCode::BAD_REQUEST => ApiError::malformed(message),
            // poem-openapi refuses a missing `Authorization` header before any checker runs.
            StatusCode::UNAUTHORIZED => ApiError::from_code(
                ErrorCode::Unauthorized,
                "authorization: an api key is required: send `Authorization: Bearer bwk_…`",
            ),
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
        let retriable = self.code.is_retryable();
        let retry_after_opt = self.retry_after_secs();
        // A 5xx's own message can name tables, constraints, paths or upstream answers: it goes
        // to the log, and the client gets a generic one with the request id to quote.
        let message = if self.status.is_server_error() {
            error!(
                code = self.code.as_str(),
                request_id,
                error = self.message,
                "request failed"
            );
            public_server_error_message(self.code, request_id)
        } else {
            self.message
        };
        let body = ErrorBody {
            code: self.code.as_str().to_owned(),
            message,
            request_id: request_id.to_owned(),
            retriable,
        };
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = Json(body).with_status(self.status).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bulwark\""),
            );
        }
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

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Invalid(message) => ApiError::invalid(message),
            AuthError::NotFound(_) => ApiError::not_found(error.to_string()),
            AuthError::Conflict(message) => ApiError::conflict(message),
            AuthError::Store(store_error) => ApiError::from(store_error),
        }
    }
}

impl From<SchedulerError> for ApiError {
    fn from(error: SchedulerError) -> Self {
        match error {
            SchedulerError::NotFound(_) => ApiError::not_found(error.to_string()),
            SchedulerError::Store(store_error) => store_error.into(),
            SchedulerError::Unavailable => ApiError::unavailable(error.to_string()),
        }
    }
}

/// A requeue the store refused maps as a store error; one the broker or the node's setup
/// refused is a dependency being unavailable.
impl From<RequeueError> for ApiError {
    fn from(error: RequeueError) -> Self {
        match error {
            RequeueError::Store(store_error) => store_error.into(),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

/// An operator's control of a subtree: an unknown path names the `path` field.
impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::NotFound(_) | ControlError::NotASupervisor(_) => {
                ApiError::not_found(format!("path: {error}"))
            }
            ControlError::NotRunning(_) => ApiError::conflict(error.to_string()),
            ControlError::StartFailed(..) => ApiError::internal(error.to_string()),
        }
    }
}

/// Documents the error responses every operation may return, all with [`ErrorBody`].
impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let statuses: [(u16, &'static str); 12] = [
            (400, "Malformed request (VALIDATION_FAILED)"),
            (401, "No valid API key (UNAUTHORIZED)"),
            (
                403,
                "The key lacks the scope this operation needs (FORBIDDEN)",
            ),
            (404, "Not found (RESOURCE_NOT_FOUND)"),
            (409, "Conflict with an existing resource (CONFLICT)"),
            (413, "Body larger than the limit (PAYLOAD_TOO_LARGE)"),
            (
                415,
                "The body is not `application/json` (VALIDATION_FAILED)",
            ),
            (
                422,
                "Input breaks a rule or is not of the documented type; the message names the \
                 field (VALIDATION_FAILED)",
            ),
            (
                429,
                "Rate limit exceeded; see Retry-After (RATE_LIMIT_EXCEEDED)",
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

/// Returns what a client is told of a server-side failure: what kind it is and the request id
/// under which the log has the details.
fn public_server_error_message(code: ErrorCode, request_id: &str) -> String {
    let what = match code {
        ErrorCode::Overloaded => "the node is overloaded, retry after Retry-After",
        ErrorCode::ServiceUnavailable => "a dependency is unavailable, retry after Retry-After",
        ErrorCode::UpstreamTimeout => "a dependency did not answer in time",
        _ => "internal error",
    };
    format!("{what}; the server log has the details under request id {request_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> ErrorBody {
        let text = response.into_body().into_string().await.expect("body");
        serde_json::from_str(&text).expect("an error body")
    }

    /// Proves a store error's text (table, constraint) never reaches the client: the body has
    /// a generic message naming the request id, for both the retriable 503 and the 500.
    #[tokio::test]
    async fn server_errors_hide_their_detail() {
        let detail = "duplicate key value violates unique constraint \"jobs_pkey\" on table jobs";
        let internal: ApiError = StoreError::corrupt("job 42: result", detail).into();
        let unavailable = ApiError::unavailable(format!("the store is unavailable: {detail}"));
        for (error, code) in [
            (internal, "INTERNAL_ERROR"),
            (unavailable, "SERVICE_UNAVAILABLE"),
        ] {
            let body = body_of(error.into_response_for("req-42")).await;
            assert_eq!(body.code, code);
            assert_eq!(body.request_id, "req-42");
            assert!(!body.message.contains("jobs"), "{}", body.message);
            assert!(body.message.contains("req-42"), "{}", body.message);
        }
    }

    /// Proves a client error keeps its message: it names the field the client must fix.
    #[tokio::test]
    async fn client_errors_keep_their_message() {
        let body =
            body_of(ApiError::invalid("texts: must not be empty").into_response_for("r")).await;
        assert_eq!(body.message, "texts: must not be empty");
    }
}
