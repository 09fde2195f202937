use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bulwark_audit::{AnswerError, AnswerSource};
use bulwark_core::{ErrorCode, JobError};
use bulwark_providers::{
    BreakerState, CircuitBreaker, Completion, CompletionRequest, ProviderError,
};
use ractor::rpc::CallResult;
use ractor::{ActorRef, registry};
use tracing::warn;

use crate::ProviderMsg;

/// How one configured provider is reached.
#[derive(Debug, Clone)]
pub struct ProviderRoute {
    /// The configured name callers use, e.g. `openai` or `sim`.
    pub name: String,
    /// The actor's registered name; the supervisor restarts it under the same name.
    pub actor_name: String,
    /// Providers tried in order when this one fails (never for a `BAD_REQUEST`).
    pub fallbacks: Vec<String>,
    /// The longest a caller waits for this provider, retries included. Slightly longer than
    /// the provider's own per-call deadline, so the provider's own timeout normally wins.
    pub call_timeout: Duration,
    /// The provider's breaker, read for `/health`; `None` when it has none.
    pub breaker_opt: Option<CircuitBreaker>,
}

/// One provider as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderStatus {
    pub name: String,
    pub running: bool,
    pub breaker_opt: Option<BreakerState>,
}

/// Why [`ProviderRouter::complete`] produced no completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderCallError {
    #[error("unknown provider `{provider}`, configured: {}", known.join(", "))]
    UnknownProvider {
        provider: String,
        known: Vec<String>,
    },
    /// The provider's actor is not registered (it is being restarted, or the tree stopped).
    #[error("provider `{provider}` is not running")]
    NotRunning { provider: String },
    /// The actor took no reply within the call timeout.
    #[error("provider `{provider}` gave no answer within {after:?}")]
    Timeout { provider: String, after: Duration },
    /// The actor or the call's task stopped before replying.
    #[error("provider `{provider}` stopped while handling the call")]
    ActorStopped { provider: String },
    /// The provider answered with an error, after its retries.
    #[error("provider `{provider}`: {error}")]
    Provider {
        provider: String,
        error: ProviderError,
    },
}

impl ProviderCallError {
    /// Returns a stable code: the provider's own ([`ProviderError::code`]) when it answered,
    /// otherwise `UNKNOWN_PROVIDER`, `PROVIDER_UNAVAILABLE` or `UPSTREAM_TIMEOUT`.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderCallError::UnknownProvider { .. } => "UNKNOWN_PROVIDER",
            ProviderCallError::NotRunning { .. } | ProviderCallError::ActorStopped { .. } => {
                "PROVIDER_UNAVAILABLE"
            }
            ProviderCallError::Timeout { .. } => "UPSTREAM_TIMEOUT",
            ProviderCallError::Provider { error, .. } => error.code(),
        }
    }

    /// Returns true when the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderCallError::UnknownProvider { .. } => false,
            ProviderCallError::NotRunning { .. }
            | ProviderCallError::ActorStopped { .. }
            | ProviderCallError::Timeout { .. } => true,
            ProviderCallError::Provider { error, .. } => error.is_retryable(),
        }
    }

    /// Returns when to try again, if the provider or this node said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderCallError::Provider { error, .. } => error.retry_after(),
            _ => None,
        }
    }

    /// Returns the job-error taxonomy code this failure is stored under.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ProviderCallError::UnknownProvider { .. } => ErrorCode::ValidationFailed,
            ProviderCallError::NotRunning { .. } | ProviderCallError::ActorStopped { .. } => {
                ErrorCode::ServiceUnavailable
            }
            ProviderCallError::Timeout { .. } => ErrorCode::UpstreamTimeout,
            ProviderCallError::Provider { error, .. } => match error {
                ProviderError::RateLimited { .. } => ErrorCode::RateLimitExceeded,
                ProviderError::Timeout(_) => ErrorCode::UpstreamTimeout,
                ProviderError::BulkheadFull { .. } => ErrorCode::Overloaded,
                ProviderError::Unauthorized(_) | ProviderError::BadRequest(_) => {
                    ErrorCode::ValidationFailed
                }
                ProviderError::Upstream { .. } if !error.is_retryable() => {
                    ErrorCode::ValidationFailed
                }
                ProviderError::Upstream { .. }
                | ProviderError::MalformedResponse(_)
                | ProviderError::ResponseTooLarge { .. }
                | ProviderError::CircuitOpen { .. }
                | ProviderError::ConnectionFailed(_) => ErrorCode::ServiceUnavailable,
            },
        }
    }
}

impl From<ProviderCallError> for JobError {
    fn from(error: ProviderCallError) -> Self {
        JobError::new(error.error_code(), format!("{}: {error}", error.code()))
    }
}

/// The way into the provider actors, for the `provider.complete` job kind and the audit.
///
/// `complete(provider, request)` looks the provider's actor up by its registered name on every
/// call (never a cached `ActorRef`, so it stays valid across restarts) and waits at most the
/// route's call timeout: a dead, restarting or hung actor gives the caller a
/// [`ProviderCallError`], never a hang. When the provider fails and the route names fallbacks,
/// they are tried in order; [`Completion::provider`] says who answered. Retries, the breaker,
/// the rate limit and the bulkhead happen inside each provider, before the error reaches here.
/// Cheap to clone; share it freely.
#[derive(Debug, Clone)]
pub struct ProviderRouter {
    routes: Arc<BTreeMap<String, ProviderRoute>>,
}

impl ProviderRouter {
    pub fn new(routes: Vec<ProviderRoute>) -> Self {
        let routes = routes
            .into_iter()
            .map(|route| (route.name.clone(), route))
            .collect();
        ProviderRouter {
            routes: Arc::new(routes),
        }
    }

    /// Returns the configured provider names, sorted.
    pub fn provider_names(&self) -> Vec<String> {
        self.routes.keys().cloned().collect()
    }

    /// Returns true when `provider` is configured.
    pub fn contains(&self, provider: &str) -> bool {
        self.routes.contains_key(provider)
    }

    /// Returns the route of a configured provider.
    pub fn route(&self, provider: &str) -> Option<&ProviderRoute> {
        self.routes.get(provider)
    }

    /// Returns true when the provider's actor is registered (running) right now.
    pub fn is_running(&self, provider: &str) -> bool {
        self.routes
            .get(provider)
            .is_some_and(|route| registry::where_is(route.actor_name.clone()).is_some())
    }

    /// Returns every provider's actor liveness and breaker state, sorted by name.
    pub fn statuses(&self) -> Vec<ProviderStatus> {
        self.routes
            .values()
            .map(|route| ProviderStatus {
                name: route.name.clone(),
                running: registry::where_is(route.actor_name.clone()).is_some(),
                breaker_opt: route.breaker_opt.as_ref().map(CircuitBreaker::state),
            })
            .collect()
    }

    /// Asks `provider` for a completion, then its fallbacks in order if it fails. The error is
    /// the first provider's, so callers see why the provider they asked for failed.
    pub async fn complete(
        &self,
        provider: &str,
        request: CompletionRequest,
    ) -> Result<Completion, ProviderCallError> {
        let Some(route) = self.routes.get(provider) else {
            return Err(ProviderCallError::UnknownProvider {
                provider: provider.to_owned(),
                known: self.provider_names(),
            });
        };
        let first_error = match self.call_one(route, request.clone()).await {
            Ok(completion) => return Ok(completion),
            Err(error) => error,
        };
        let is_bad_request = matches!(
            &first_error,
            ProviderCallError::Provider {
                error: ProviderError::BadRequest(_),
                ..
            }
        );
        if is_bad_request {
            return Err(first_error);
        }
        for fallback in &route.fallbacks {
            let Some(fallback_route) = self.routes.get(fallback) else {
                continue;
            };
            warn!(
                provider,
                fallback,
                code = first_error.code(),
                "provider failed, trying its fallback"
            );
            match self.call_one(fallback_route, request.clone()).await {
                Ok(completion) => return Ok(completion),
                Err(fallback_error) => warn!(
                    provider = fallback.as_str(),
                    code = fallback_error.code(),
                    "fallback provider failed"
                ),
            }
        }
        Err(first_error)
    }

    async fn call_one(
        &self,
        route: &ProviderRoute,
        request: CompletionRequest,
    ) -> Result<Completion, ProviderCallError> {
        let provider = route.name.clone();
        let Some(cell) = registry::where_is(route.actor_name.clone()) else {
            return Err(ProviderCallError::NotRunning { provider });
        };
        let actor: ActorRef<ProviderMsg> = cell.into();
        let started = Instant::now();
        let outcome = actor
            .call(
                |reply| ProviderMsg::Complete {
                    request,
                    reply,
                    span: tracing::Span::current(),
                },
                Some(route.call_timeout),
            )
            .await;
        match outcome {
            Ok(CallResult::Success(Ok(completion))) => Ok(completion),
            Ok(CallResult::Success(Err(error))) => {
                Err(ProviderCallError::Provider { provider, error })
            }
            Ok(CallResult::Timeout) => Err(ProviderCallError::Timeout {
                provider,
                after: started.elapsed(),
            }),
            Ok(CallResult::SenderError) | Err(_) => {
                Err(ProviderCallError::ActorStopped { provider })
            }
        }
    }
}

/// Audits ask their prompts through the router, fallbacks included; a failed call becomes the
/// item's error code and message.
#[async_trait]
impl AnswerSource for ProviderRouter {
    fn provider_names(&self) -> Vec<String> {
        ProviderRouter::provider_names(self)
    }

    async fn complete(
        &self,
        provider: &str,
        request: CompletionRequest,
    ) -> Result<Completion, AnswerError> {
        ProviderRouter::complete(self, provider, request)
            .await
            .map_err(|error| AnswerError {
                code: error.code().to_owned(),
                message: error.to_string(),
            })
    }
}
