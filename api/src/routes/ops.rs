use std::sync::Arc;

use bulwark_store::NewOpsAuditEntry;
use bulwark_supervisors::{ControlAction, control_supervisor, observe_supervisor};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use tracing::info;

use crate::ApiTags;
use crate::auth::OperateKey;
use crate::error::{ApiError, ApiResult};
use crate::middleware::RequestId;
use crate::state::ApiState;

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

/// Operator controls of the supervision tree. Every operation needs a key with the `operate`
/// scope; the audit log records the key's name for each action.
#[derive(Debug)]
pub struct OpsApi {
    pub state: Arc<ApiState>,
}

impl OpsApi {
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
        auth: &OperateKey,
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
            actor: format!("key:{}", auth.0.name),
            action: action.as_str().to_owned(),
            target: target.clone(),
            outcome: "failed".to_owned(),
            detail: None,
            request_id: Some(request_id.0.clone()),
        };
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
                Err(control_error.into())
            }
        }
    }
}

#[OpenApi(tag = "ApiTags::Operations")]
impl OpsApi {
    /// Returns the live supervision tree: each node's status, strategy, children and
    /// restart/panic/error/hang/kill/escalation counters. Needs the `operate` scope.
    #[oai(
        path = "/v1/ops/supervisors",
        method = "get",
        operation_id = "ops_tree"
    )]
    async fn tree(&self, _auth: OperateKey) -> ApiResult<Json<Value>> {
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
        auth: OperateKey,
        path: Path<String>,
        request_id: Data<&RequestId>,
    ) -> ApiResult<Json<OpsActionResult>> {
        self.act(&auth, &path.0, ControlAction::Restart, request_id.0)
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
        auth: OperateKey,
        path: Path<String>,
        request_id: Data<&RequestId>,
    ) -> ApiResult<Json<OpsActionResult>> {
        self.act(&auth, &path.0, ControlAction::Stop, request_id.0)
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
        auth: OperateKey,
        path: Path<String>,
        request_id: Data<&RequestId>,
    ) -> ApiResult<Json<OpsActionResult>> {
        self.act(&auth, &path.0, ControlAction::Start, request_id.0)
            .await
    }
}
