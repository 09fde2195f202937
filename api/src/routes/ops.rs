use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bulwark_store::NewOpsAuditEntry;
use bulwark_supervisors::{ControlAction, ControlError, control_supervisor, observe_supervisor};
use poem::Request;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use tracing::{info, warn};

use crate::ApiTags;
use crate::error::{ApiError, ApiResult};
use crate::middleware::RequestId;
use crate::state::ApiState;

/// The operator token, resolved from the environment variable the config names. Never shown.
#[derive(Clone)]
pub struct OperatorToken(String);

impl fmt::Debug for OperatorToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("OperatorToken(***)")
    }
}

impl OperatorToken {
    /// Returns the token in `env[variable]`; `None` when unset or empty (operator controls
    /// then answer `403`).
    pub fn from_env(env: &HashMap<String, String>, variable: &str) -> Option<OperatorToken> {
        env.get(variable)
            .filter(|token| !token.is_empty())
            .map(|token| OperatorToken(token.clone()))
    }

    /// Compares in time independent of where the first difference is.
    fn matches(&self, presented: &str) -> bool {
        let expected = self.0.as_bytes();
        let presented = presented.as_bytes();
        let mut difference = expected.len() ^ presented.len();
        for (index, byte) in expected.iter().enumerate() {
            difference |= usize::from(byte ^ presented.get(index).copied().unwrap_or(0));
        }
        difference == 0
    }
}

/// What an operator action did.
#[derive(Debug, Clone, Object)]
pub struct OpsActionResult {
    /// `stop`, `start` or `restart`.
    pub action: String,
    /// The node acted on, e.g. `root/jobs`.
    pub target: String,
    /// `succeeded`.
    pub outcome: String,
    /// The audit log row.
    pub audit_id: String,
}

/// Operator controls of the supervision tree. Every operation needs
/// `Authorization: Bearer <operator token>` (`401` without, `403` with a wrong one or when no
/// token is configured); `X-Operator` names who acts, for the audit log.
#[derive(Debug)]
pub struct OpsApi {
    pub state: Arc<ApiState>,
}

impl OpsApi {
    /// Checks the bearer token; returns who asked. Refusals are audited by the caller.
    fn authorize(&self, request: &Request) -> Result<String, ApiError> {
        let Some(expected) = &self.state.operator_token else {
            return Err(ApiError::from_code(
                bulwark_actors::ErrorCode::Forbidden,
                "operator controls are disabled on this node: set the variable named by ops.token_env",
            ));
        };
        let presented = request
            .headers()
            .get(poem::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::from_code(
                    bulwark_actors::ErrorCode::Unauthorized,
                    "authorization: a bearer operator token is required",
                )
            })?;
        if !expected.matches(presented.trim()) {
            return Err(ApiError::from_code(
                bulwark_actors::ErrorCode::Forbidden,
                "authorization: the operator token is not valid",
            ));
        }
        let operator = request
            .headers()
            .get("x-operator")
            .and_then(|value| value.to_str().ok())
            .filter(|name| {
                !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"-_.@".contains(&byte))
            })
            .unwrap_or("operator");
        Ok(format!("token:{operator}"))
    }

    async fn audit(&self, entry: NewOpsAuditEntry) -> ApiResult<String> {
        let row = self.state.store.record_ops_action(&entry).await?;
        info!(
            actor = row.actor,
            action = row.action,
            target = row.target,
            outcome = row.outcome,
            "operator action"
        );
        Ok(row.id)
    }

    async fn act(
        &self,
        request: &Request,
        path: &str,
        action: ControlAction,
        request_id: &RequestId,
    ) -> ApiResult<Json<OpsActionResult>> {
        let names: Vec<String> = path
            .split(['.', '/'])
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        let names: Vec<String> = match names.split_first() {
            Some((first, rest)) if first == "root" => rest.to_vec(),
            _ => names,
        };
        let target = format!("root/{}", names.join("/"));
        let mut entry = NewOpsAuditEntry {
            actor: "anonymous".to_owned(),
            action: action.as_str().to_owned(),
            target: target.clone(),
            outcome: "denied".to_owned(),
            detail: None,
            request_id: Some(request_id.0.clone()),
        };
        let operator = match self.authorize(request) {
            Ok(operator) => operator,
            Err(error) => {
                entry.detail = Some(error.message.clone());
                if let Err(audit_error) = self.audit(entry).await {
                    warn!(error = %audit_error, "failed to audit a refused operator action");
                }
                return Err(error);
            }
        };
        entry.actor = operator;
        if names.is_empty() {
            entry.detail = Some("the root itself cannot be controlled".to_owned());
            entry.outcome = "failed".to_owned();
            self.audit(entry).await?;
            return Err(ApiError::invalid(
                "path: name a subtree below root, e.g. root.jobs",
            ));
        }
        let outcome = control_supervisor(&self.state.root_supervisor, names, action).await;
        match outcome {
            Ok(()) => {
                entry.outcome = "succeeded".to_owned();
                let audit_id = self.audit(entry).await?;
                Ok(Json(OpsActionResult {
                    action: action.as_str().to_owned(),
                    target,
                    outcome: "succeeded".to_owned(),
                    audit_id,
                }))
            }
            Err(control_error) => {
                entry.outcome = "failed".to_owned();
                entry.detail = Some(control_error.to_string());
                self.audit(entry).await?;
                Err(match control_error {
                    ControlError::NotFound(_) | ControlError::NotASupervisor(_) => {
                        ApiError::not_found(format!("path: {control_error}"))
                    }
                    ControlError::NotRunning(_) => ApiError::conflict(control_error.to_string()),
                    ControlError::StartFailed(..) => ApiError::internal(control_error.to_string()),
                })
            }
        }
    }
}

#[OpenApi(tag = "ApiTags::Operations")]
impl OpsApi {
    /// Returns the live supervision tree: each node's status, strategy, children and
    /// restart/panic/error/hang/kill/escalation counters. Needs the operator token.
    #[oai(
        path = "/v1/ops/supervisors",
        method = "get",
        operation_id = "ops_tree"
    )]
    async fn tree(&self, request: &Request) -> ApiResult<Json<Value>> {
        self.authorize(request)?;
        let snapshot = observe_supervisor(&self.state.root_supervisor)
            .await
            .ok_or_else(|| ApiError::unavailable("the root supervisor does not answer"))?;
        serde_json::to_value(&snapshot)
            .map(Json)
            .map_err(|error| ApiError::internal(format!("failed to render the tree: {error}")))
    }

    /// Restarts a subtree gracefully: drain (running jobs finish or go back to the queue),
    /// stop, start. `path` is dot-separated, e.g. `root.jobs`.
    #[oai(
        path = "/v1/ops/supervisors/:path/restart",
        method = "post",
        operation_id = "ops_restart"
    )]
    async fn restart(
        &self,
        request: &Request,
        path: Path<String>,
        request_id: Data<&RequestId>,
    ) -> ApiResult<Json<OpsActionResult>> {
        self.act(request, &path.0, ControlAction::Restart, request_id.0)
            .await
    }

    /// Drains and stops a subtree; it stays down until started.
    #[oai(
        path = "/v1/ops/supervisors/:path/stop",
        method = "post",
        operation_id = "ops_stop"
    )]
    async fn stop(
        &self,
        request: &Request,
        path: Path<String>,
        request_id: Data<&RequestId>,
    ) -> ApiResult<Json<OpsActionResult>> {
        self.act(request, &path.0, ControlAction::Stop, request_id.0)
            .await
    }

    /// Starts a stopped subtree.
    #[oai(
        path = "/v1/ops/supervisors/:path/start",
        method = "post",
        operation_id = "ops_start"
    )]
    async fn start(
        &self,
        request: &Request,
        path: Path<String>,
        request_id: Data<&RequestId>,
    ) -> ApiResult<Json<OpsActionResult>> {
        self.act(request, &path.0, ControlAction::Start, request_id.0)
            .await
    }
}
