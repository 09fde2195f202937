//! Authentication, authorization and rate limits of the API.
//!
//! [`Authenticate`] runs on every request: it counts the request against its client IP's
//! bucket, verifies a presented `Authorization: Bearer` key (a refused one is counted against
//! the IP's failed-authentication bucket), and leaves a [`Caller`] in the request. Operations
//! then name the scope they need by taking one of [`ReadKey`], [`SubmitKey`], [`OperateKey`]
//! or [`AdminKey`]: poem-openapi documents it as that operation's security requirement, and
//! its checker refuses a key without the scope (`403`) and counts the request against the
//! key's bucket for that scope (`429` when empty). Deny by default: an operation that takes no
//! key type is open, and the table-driven test over the OpenAPI document fails for it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_auth::metrics::AuthFailed;
use bulwark_auth::{
    AuthFailure, Authenticator, BudgetCharge, Principal, RateDecision, RateLimiters, Scope,
};
use bulwark_core::{ErrorCode, now_ms};

use poem::http::{HeaderValue, Method, header};
use poem::{Endpoint, Middleware, Request, Response, Result};
use poem_openapi::auth::Bearer;
use poem_openapi::{OperationId, SecurityScheme};

use crate::error::ApiError;

/// Endpoint groups that may be served without a key (`auth.open_endpoints`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenEndpoints {
    /// `/docs` and `/openapi.json`.
    pub docs: bool,
    pub health: bool,
    pub metrics: bool,
}

impl OpenEndpoints {
    /// Reads the configured group names (validated by the config crate).
    pub fn from_names(names: &[String]) -> OpenEndpoints {
        let open = |group: &str| names.iter().any(|name| name == group);
        OpenEndpoints {
            docs: open("docs"),
            health: open("health"),
            metrics: open("metrics"),
        }
    }
}

/// What the API checks keys and limits with. Built by the binary.
#[derive(Debug)]
pub struct ApiAuth {
    pub authenticator: Authenticator,
    /// Where refused `operate` and `admin` calls are audited.
    pub store: bulwark_store::Store,
    pub limiters: RateLimiters,
    pub open: OpenEndpoints,
}

impl ApiAuth {
    /// Reloads the keys and forgets idle rate-limit buckets every refresh interval until `stop`
    /// is cancelled; writes due last-use times once more on the way out.
    pub fn spawn_upkeep(
        self: &Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let auth = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(auth.authenticator.refresh_interval());
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                if let Err(error) = auth.authenticator.refresh().await {
                    tracing::warn!(%error, "failed to refresh the api keys, keeping the cached ones");
                }
                auth.limiters.retain_recent();
            }
            if let Err(error) = auth.authenticator.flush_last_used().await {
                tracing::warn!(%error, "failed to record when api keys were last used");
            }
        })
    }

    /// Charges provider calls when there are any (see [`ApiAuth::charge_provider_calls`]);
    /// `None` for work that makes no provider call.
    pub async fn charge_provider_calls_opt(
        self: &Arc<Self>,
        principal: &Arc<Principal>,
        calls: u64,
    ) -> Result<Option<ProviderCharge>, ApiError> {
        match calls {
            0 => Ok(None),
            calls => self.charge_provider_calls(principal, calls).await.map(Some),
        }
    }

    /// Charges provider calls to the key's daily budget; `429` when it would pass it. The
    /// returned charge is refunded with [`ProviderCharge::refund`] when no work was created.
    pub async fn charge_provider_calls(
        self: &Arc<Self>,
        principal: &Arc<Principal>,
        calls: u64,
    ) -> Result<ProviderCharge, ApiError> {
        let calls = i64::try_from(calls).unwrap_or(i64::MAX);
        let charge = self
            .authenticator
            .charge_provider_calls(principal, calls)
            .await?;
        match charge {
            BudgetCharge::Charged { .. } => Ok(ProviderCharge {
                auth: self.clone(),
                principal: principal.clone(),
                calls,
            }),
            BudgetCharge::OverBudget { used_today, budget } => {
                bulwark_auth::metrics::RateLimited {
                    limit: "daily_provider_calls",
                }
                .emit();
                Err(rate_limited(
                    format!(
                        "budget: key `{}` may start {budget} provider calls a day (UTC); \
                         {used_today} are used and this request needs {calls}",
                        principal.name
                    ),
                    until_utc_midnight(),
                ))
            }
        }
    }
}

/// What an operation's checker decided for a request.
#[derive(Debug, Clone, Copy, Default)]
struct Checked {
    /// The key bucket's decision.
    decision_opt: Option<RateDecision>,
    /// The scope the operation asked for.
    scope_opt: Option<Scope>,
}

/// Who is calling, as [`Authenticate`] found: in the extensions of every request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal_opt: Option<Arc<Principal>>,
    auth: Arc<ApiAuth>,
    /// What the operation's checker decided: reported in `RateLimit-*` headers and, for
    /// `operate` and `admin` changes, in the audit log.
    checked: Arc<Mutex<Checked>>,
}

impl Caller {
    /// Returns the key, or `401` when the request presented none.
    fn principal(&self) -> Result<&Arc<Principal>, ApiError> {
        self.principal_opt.as_ref().ok_or_else(|| {
            AuthFailed { reason: "missing" }.emit();
            unauthorized("an api key is required: send `Authorization: Bearer bwk_…`")
        })
    }

    /// Returns the key if it grants `scope`, after counting the request in the key's bucket.
    /// A key refused an `operate` or `admin` operation is recorded in the audit log.
    async fn authorize(&self, scope: Scope, request: &Request) -> Result<Arc<Principal>, ApiError> {
        let principal = self.principal()?;
        if !principal.scopes.grants(scope) {
            AuthFailed { reason: "scope" }.emit();
            if matches!(scope, Scope::Operate | Scope::Admin) {
                self.audit_denied(principal, scope, request).await;
            }
            return Err(ApiError::from_code(
                ErrorCode::Forbidden,
                format!(
                    "authorization: key `{}` lacks the `{scope}` scope this operation needs",
                    principal.name
                ),
            ));
        }
        self.count(principal, scope)?;
        self.lock_checked().scope_opt = Some(scope);
        Ok(principal.clone())
    }

    /// Counts the request in the key's bucket for `scope`; `429` when it is empty.
    fn count(&self, principal: &Principal, scope: Scope) -> Result<(), ApiError> {
        let decision = count_key(&self.auth, principal, scope)?;
        self.lock_checked().decision_opt = Some(decision);
        Ok(())
    }

    fn lock_checked(&self) -> std::sync::MutexGuard<'_, Checked> {
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// On a route open to everyone, a presented key is still counted (in its `read` bucket),
    /// whatever its scopes.
    fn count_on_open_route(&self) -> Result<(), ApiError> {
        match &self.principal_opt {
            Some(principal) => self.count(principal, Scope::Read),
            None => Ok(()),
        }
    }

    /// Records that `principal` was refused an operation needing `scope`.
    async fn audit_denied(&self, principal: &Principal, scope: Scope, request: &Request) {
        KeyAction {
            principal,
            action: request.method().as_str().to_lowercase(),
            path: request.uri().path(),
            outcome: "denied",
            detail: format!("the key lacks the `{scope}` scope"),
            request_id_opt: request_id_of(request),
        }
        .record(&self.auth.store)
        .await;
    }
}

/// Returns the request id the request middleware gave `request`.
fn request_id_of(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<crate::RequestId>()
        .map(|id| id.0.clone())
}

/// One action of a key, as the audit log records it: under the key's name, never a name the
/// caller chose.
struct KeyAction<'a> {
    principal: &'a Principal,
    action: String,
    path: &'a str,
    /// `succeeded`, `failed` or `denied`.
    outcome: &'static str,
    detail: String,
    request_id_opt: Option<String>,
}

impl KeyAction<'_> {
    /// Writes the row; a failure to write is logged, never turned into the caller's error.
    async fn record(self, store: &bulwark_store::Store) {
        let entry = bulwark_store::NewOpsAuditEntry {
            actor: format!("key:{}", self.principal.name),
            action: self.action,
            target: self.path.chars().take(256).collect(),
            outcome: self.outcome.to_owned(),
            detail: Some(self.detail),
            request_id: self.request_id_opt,
        };
        match store.record_ops_action(&entry).await {
            Ok(_) => tracing::info!(
                actor = entry.actor,
                action = entry.action,
                target = entry.target,
                outcome = entry.outcome,
                "key action audited"
            ),
            Err(error) => {
                tracing::warn!(%error, action = entry.action, "failed to audit a key action");
            }
        }
    }
}

/// Provider calls charged to a key for one submission.
#[derive(Debug)]
pub struct ProviderCharge {
    auth: Arc<ApiAuth>,
    principal: Arc<Principal>,
    calls: i64,
}

impl ProviderCharge {
    /// Gives back `num_unused` of the charged calls (the jobs of a batch that created no new
    /// work) and keeps the rest charged.
    pub async fn refund_unused(mut self, num_unused: u64) {
        let num_unused = i64::try_from(num_unused)
            .unwrap_or(i64::MAX)
            .min(self.calls);
        if num_unused == 0 {
            return;
        }
        self.calls = num_unused;
        self.refund().await;
    }

    /// Gives the calls back: the submission created no new work (an idempotent replay, or it
    /// failed).
    pub async fn refund(self) {
        if let Err(error) = self
            .auth
            .authenticator
            .refund_provider_calls(&self.principal, self.calls)
            .await
        {
            tracing::warn!(%error, calls = self.calls, "failed to refund provider calls");
        }
    }
}

/// Counts one request of `principal` in its bucket for `scope`; `429` when it is empty.
fn count_key(
    auth: &ApiAuth,
    principal: &Principal,
    scope: Scope,
) -> Result<RateDecision, ApiError> {
    let decision = auth.limiters.check_key(scope, &principal.key_id);
    if let RateDecision::Limited { retry_after, .. } = decision {
        return Err(rate_limited(
            format!(
                "rate limit: key `{}` sent too many `{scope}` requests",
                principal.name
            ),
            retry_after,
        ));
    }
    Ok(decision)
}

fn until_utc_midnight() -> Duration {
    let day_ms = 86_400_000;
    let now = now_ms();
    let left = day_ms - now.rem_euclid(day_ms);
    Duration::from_millis(u64::try_from(left).unwrap_or(0))
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::from_code(ErrorCode::Unauthorized, format!("authorization: {message}"))
}

fn rate_limited(message: String, retry_after: Duration) -> ApiError {
    let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::from_code(ErrorCode::RateLimitExceeded, message).with_retry_after(seconds)
}

/// Returns the caller of a request, or a `500` when [`Authenticate`] did not run (a wiring
/// bug, never a client's fault).
fn caller_of(request: &Request) -> Result<&Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| ApiError::internal("the authentication middleware is not installed"))
}

/// Checks `scope` for `request`; for operations outside the security schemes (`/health`,
/// `/metrics`) that are open when configured so.
pub async fn authorize_unless_open(
    request: &Request,
    scope: Scope,
    open: impl Fn(&OpenEndpoints) -> bool,
) -> Result<(), ApiError> {
    let caller = caller_of(request)?;
    if open(&caller.auth.open) {
        return caller.count_on_open_route();
    }
    caller.authorize(scope, request).await.map(|_| ())
}

macro_rules! scope_scheme {
    ($name:ident, $checker:ident, $checker_name:literal, $scope:expr, $rename:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, SecurityScheme)]
        #[oai(
                                                                            rename = $rename,
                                                                            ty = "bearer",
                                                                            bearer_format = "bwk_…",
                                                                            checker = $checker_name
                                                                        )]
        pub struct $name(pub Arc<Principal>);

        async fn $checker(request: &Request, _bearer: Bearer) -> Result<Arc<Principal>> {
            Ok(caller_of(request)?.authorize($scope, request).await?)
        }
    };
}

scope_scheme!(
    ReadKey,
    check_read,
    "check_read",
    Scope::Read,
    "read",
    "An API key with the `read` scope (or `admin`): jobs, audits, schedules, dead letters."
);
scope_scheme!(
    SubmitKey,
    check_submit,
    "check_submit",
    Scope::Submit,
    "submit",
    "An API key with the `submit` scope (or `admin`): create jobs, audits, sentiment requests."
);
scope_scheme!(
    OperateKey,
    check_operate,
    "check_operate",
    Scope::Operate,
    "operate",
    "An API key with the `operate` scope (or `admin`): dead letters, schedules, supervisors, \
     incidents."
);
scope_scheme!(
    AdminKey,
    check_admin,
    "check_admin",
    Scope::Admin,
    "admin",
    "An API key with the `admin` scope: manage keys."
);

/// Authenticates every request and applies the per-IP limits; see the module docs.
#[derive(Debug, Clone)]
pub struct Authenticate {
    pub auth: Arc<ApiAuth>,
}

impl<E: Endpoint> Middleware<E> for Authenticate {
    type Output = AuthenticateEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AuthenticateEndpoint {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Debug)]
pub struct AuthenticateEndpoint<E> {
    inner: E,
    auth: Arc<ApiAuth>,
}

/// Probes answer without a key and outside every bucket: orchestrators poll them.
fn is_probe(path: &str) -> bool {
    path == "/live" || path == "/ready"
}

fn is_docs(path: &str) -> bool {
    path == "/openapi.json" || path == "/docs" || path.starts_with("/docs/")
}

impl<E: Endpoint> Endpoint for AuthenticateEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> Result<Self::Output> {
        let path = request.uri().path();
        let presents_key = request.headers().contains_key(header::AUTHORIZATION);
        // Orchestrators poll the probes without a key: nothing to check or count. A request
        // that presents a key has it checked and counted everywhere, probes included.
        let probe = is_probe(path);
        if probe && !presents_key {
            return self
                .inner
                .call(request)
                .await
                .map(poem::IntoResponse::into_response);
        }
        let docs = is_docs(path);
        let ip = request
            .remote_addr()
            .as_socket_addr()
            .map(|addr| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if let RateDecision::Limited { retry_after, .. } = self.auth.limiters.check_ip(ip) {
            return Err(rate_limited(
                "rate limit: too many requests from this address".to_owned(),
                retry_after,
            )
            .into());
        }
        let principal_opt = match presented_key(&request)? {
            None => None,
            Some(token) => match self.auth.authenticator.verify(token).await {
                Ok(principal) => Some(principal),
                Err(failure) => return Err(self.refuse(ip, failure).into()),
            },
        };
        if probe {
            // A probe is no API call: the key is counted, nothing is logged or reported.
            if let Some(principal) = &principal_opt {
                count_key(&self.auth, principal, Scope::Read)?;
            }
            return self
                .inner
                .call(request)
                .await
                .map(poem::IntoResponse::into_response);
        }
        if let Some(principal) = &principal_opt {
            tracing::Span::current().record("key", principal.name.as_str());
        }
        let caller = Caller {
            principal_opt,
            auth: self.auth.clone(),
            checked: Arc::new(Mutex::new(Checked::default())),
        };
        if docs && !self.auth.open.docs {
            caller.authorize(Scope::Read, &request).await?;
        } else if docs {
            caller.count_on_open_route()?;
        }
        let checked = caller.checked.clone();
        // What an audit row of a change needs, kept only for methods that change something.
        let change_opt = match (&caller.principal_opt, request.method()) {
            (_, &Method::GET | &Method::HEAD | &Method::OPTIONS) | (None, _) => None,
            (Some(principal), _) => Some((
                principal.clone(),
                request.uri().path().to_owned(),
                request_id_of(&request),
            )),
        };
        request.extensions_mut().insert(caller);
        let outcome = self
            .inner
            .call(request)
            .await
            .map(poem::IntoResponse::into_response);
        let checked = *checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some((principal, path, request_id_opt)), Some(Scope::Operate | Scope::Admin)) =
            (change_opt, checked.scope_opt)
            && !path.starts_with(HANDLER_AUDITED_PREFIX)
        {
            let (status, operation_opt) = match &outcome {
                Ok(response) => (response.status(), response.data::<OperationId>()),
                Err(error) => (error.status(), error.data::<OperationId>()),
            };
            KeyAction {
                principal: &principal,
                action: operation_opt
                    .map_or("unknown", |operation| operation.0)
                    .to_owned(),
                path: &path,
                outcome: if status.is_success() {
                    "succeeded"
                } else {
                    "failed"
                },
                detail: format!("http {}", status.as_u16()),
                request_id_opt,
            }
            .record(&self.auth.store)
            .await;
        }
        let mut response = outcome?;
        if let Some(RateDecision::Allowed {
            limit,
            remaining,
            reset_secs,
        }) = checked.decision_opt
        {
            let headers = response.headers_mut();
            headers.insert("ratelimit-limit", HeaderValue::from(limit));
            headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
            headers.insert("ratelimit-reset", HeaderValue::from(reset_secs));
        }
        Ok(response)
    }
}

/// Operator controls record their own audit rows (the response names the row).
const HANDLER_AUDITED_PREFIX: &str = "/v1/ops/";

impl<E> AuthenticateEndpoint<E> {
    /// Counts a refused credential and answers `401` (`429` past the failed-attempt bucket,
    /// `503` when the key store is down).
    fn refuse(&self, ip: IpAddr, failure: AuthFailure) -> ApiError {
        AuthFailed {
            reason: failure.as_str(),
        }
        .emit();
        if let RateDecision::Limited { retry_after, .. } = self.auth.limiters.check_failed_auth(ip)
        {
            return rate_limited(
                "rate limit: too many refused api keys from this address".to_owned(),
                retry_after,
            );
        }
        match failure {
            AuthFailure::Unavailable => {
                ApiError::unavailable("authorization: api keys cannot be checked right now")
            }
            AuthFailure::Unknown | AuthFailure::Expired | AuthFailure::Revoked => {
                unauthorized("the api key is not valid (unknown, expired or revoked)")
            }
        }
    }
}

/// Returns the bearer token of the request, `None` without an `Authorization` header, and
/// `401` for another scheme or a malformed header.
fn presented_key(request: &Request) -> Result<Option<&str>, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|text| {
            text.strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|token| !token.is_empty());
    match token {
        Some(token) => Ok(Some(token)),
        None => {
            AuthFailed {
                reason: "malformed",
            }
            .emit();
            Err(unauthorized("use `Authorization: Bearer <api key>`"))
        }
    }
}
