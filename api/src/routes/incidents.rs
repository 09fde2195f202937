use std::path::PathBuf;
use std::sync::Arc;

use bulwark_supervisors::incident::{Incident, read_all};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;

use crate::ApiTags;
use crate::auth::OperateKey;
use crate::error::{ApiError, ApiResult};
use crate::routes::paging::page_size;
use crate::state::ApiState;

/// One incident, in a list.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct IncidentSummary {
    pub id: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// `panic`, `error`, `hang` or `api_error`.
    pub kind: String,
    pub subsystem: String,
    /// Path in the supervision tree, e.g. `root/sentiment/sentiment-worker-1`.
    pub actor: String,
    pub message: String,
    pub request_id: Option<String>,
}

impl From<&Incident> for IncidentSummary {
    fn from(incident: &Incident) -> Self {
        IncidentSummary {
            id: incident.id.clone(),
            time: incident.time.clone(),
            kind: incident.failure.kind.as_str().to_owned(),
            subsystem: incident.actor.subsystem.clone(),
            actor: incident.actor.path.clone(),
            message: incident.failure.message.clone(),
            request_id: incident.request_id.clone(),
        }
    }
}

/// A page of incidents, newest first.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct IncidentList {
    pub incidents: Vec<IncidentSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Incident files (crash dumps) of this node.
#[derive(Debug)]
pub struct IncidentsApi {
    pub state: Arc<ApiState>,
}

impl IncidentsApi {
    fn dir(&self) -> ApiResult<PathBuf> {
        self.state
            .incidents
            .as_ref()
            .map(|sink| sink.dir().to_path_buf())
            .ok_or_else(|| ApiError::unavailable("incidents are not recorded on this node"))
    }

    async fn read(&self) -> ApiResult<Vec<Incident>> {
        let dir = self.dir()?;
        tokio::task::spawn_blocking(move || read_all(&dir))
            .await
            .map_err(|error| ApiError::internal(format!("failed to read incidents: {error}")))?
            .map_err(|error| ApiError::internal(format!("failed to read incidents: {error}")))
    }
}

#[OpenApi(tag = "ApiTags::Operations")]
impl IncidentsApi {
    /// Lists incidents, newest first, with cursor pagination.
    #[oai(
        path = "/v1/incidents",
        method = "get",
        operation_id = "list_incidents"
    )]
    #[allow(clippy::too_many_arguments)] // one argument per documented query parameter
    async fn list(
        &self,
        _auth: OperateKey,
        /// Only incidents of this kind: `panic`, `error`, `hang` or `api_error`.
        #[oai(validator(pattern = "^(panic|error|hang|api_error)$"))]
        kind: Query<Option<String>>,
        /// Only incidents whose actor path contains this, e.g. `sentiment-worker`.
        actor: Query<Option<String>>,
        /// Only incidents at or after this RFC 3339 UTC time, e.g. `2026-11-24T20:00:00Z`.
        since: Query<Option<String>>,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<IncidentList>> {
        if let Some(kind) = &kind.0
            && !matches!(kind.as_str(), "panic" | "error" | "hang" | "api_error")
        {
            return Err(ApiError::invalid(
                "kind: must be one of panic, error, hang, api_error",
            ));
        }
        let limit = page_size(limit.0)?;
        let mut incidents = self.read().await?;
        // Ids are UUIDv7: ordering by id is ordering by time.
        incidents.sort_by(|left, right| right.id.cmp(&left.id));
        let mut matching = incidents.iter().filter(|incident| {
            kind.0
                .as_deref()
                .is_none_or(|kind| incident.failure.kind.as_str() == kind)
                && actor
                    .0
                    .as_deref()
                    .is_none_or(|actor| incident.actor.path.contains(actor))
                && since
                    .0
                    .as_deref()
                    .is_none_or(|since| incident.time.as_str() >= since)
                && cursor
                    .0
                    .as_deref()
                    .is_none_or(|cursor| incident.id.as_str() < cursor)
        });
        let page: Vec<IncidentSummary> = matching
            .by_ref()
            .take(limit as usize)
            .map(IncidentSummary::from)
            .collect();
        let next_cursor = if matching.next().is_some() {
            page.last().map(|last| last.id.clone())
        } else {
            None
        };
        Ok(Json(IncidentList {
            incidents: page,
            next_cursor,
        }))
    }

    /// Returns one incident in full (`docs/schemas/incident_v1.schema.json`).
    #[oai(
        path = "/v1/incidents/:id",
        method = "get",
        operation_id = "get_incident"
    )]
    async fn get(&self, _auth: OperateKey, id: Path<String>) -> ApiResult<Json<Value>> {
        let incidents = self.read().await?;
        let incident = incidents
            .into_iter()
            .find(|incident| incident.id == id.0)
            .ok_or_else(|| ApiError::not_found(format!("incident {} does not exist", id.0)))?;
        serde_json::to_value(&incident)
            .map(Json)
            .map_err(|error| ApiError::internal(format!("failed to render the incident: {error}")))
    }
}
