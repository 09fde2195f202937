use std::sync::Arc;
use std::time::Duration;

use bulwark_auth::{ApiKey, IssuedKey, NewKey, Scope, Scopes};
use bulwark_core::{format_rfc3339_ms, now_ms};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use crate::ApiTags;
use crate::auth::AdminKey;
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;
use crate::strict_json::StrictJson;

/// A scope a key may hold. `admin` grants every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ScopeName {
    /// Jobs, audits, schedules, dead letters, reports, health, metrics.
    Read,
    /// Create jobs, audits and sentiment requests.
    Submit,
    /// Dead-letter requeue/park/purge, schedule changes, supervisor controls, incidents.
    Operate,
    /// Manage keys; grants every scope.
    Admin,
}

impl From<ScopeName> for Scope {
    fn from(name: ScopeName) -> Self {
        match name {
            ScopeName::Read => Scope::Read,
            ScopeName::Submit => Scope::Submit,
            ScopeName::Operate => Scope::Operate,
            ScopeName::Admin => Scope::Admin,
        }
    }
}

impl From<Scope> for ScopeName {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::Read => ScopeName::Read,
            Scope::Submit => ScopeName::Submit,
            Scope::Operate => ScopeName::Operate,
            Scope::Admin => ScopeName::Admin,
        }
    }
}

/// An API key as shown: never its token.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// The visible start of the token, e.g. `bwk_Xy12ab9Q`.
    pub prefix: String,
    pub scopes: Vec<ScopeName>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<String>,
    /// Provider calls this key may start per UTC day; absent: the node's default.
    pub daily_provider_calls: Option<i64>,
}

impl From<&ApiKey> for KeyView {
    fn from(key: &ApiKey) -> Self {
        KeyView {
            id: key.id.clone(),
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            scopes: key
                .scopes
                .to_vec()
                .into_iter()
                .map(ScopeName::from)
                .collect(),
            status: key.status_at(now_ms()).to_owned(),
            created_at: format_rfc3339_ms(key.created_at_ms),
            expires_at: key.expires_at_ms.map(format_rfc3339_ms),
            last_used_at: key.last_used_at_ms.map(format_rfc3339_ms),
            revoked_at: key.revoked_at_ms.map(format_rfc3339_ms),
            rotated_from: key.rotated_from.clone(),
            daily_provider_calls: key.daily_provider_calls,
        }
    }
}

/// A new key, with its token: shown once, never again.
#[derive(Debug, Clone, Object)]
pub struct IssuedKeyView {
    pub key: KeyView,
    /// The bearer token (`bwk_…`). Store it now: only its digest is kept.
    pub token: String,
}

impl From<&IssuedKey> for IssuedKeyView {
    fn from(issued: &IssuedKey) -> Self {
        IssuedKeyView {
            key: KeyView::from(&issued.key),
            token: issued.token.clone(),
        }
    }
}

/// What a new key is made with.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct KeyCreate {
    /// Letters, digits, `-`, `_`, `.`, `@`; recorded in the audit log for the key's actions.
    #[oai(validator(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$"))]
    pub name: String,
    #[oai(validator(min_items = 1, max_items = 4))]
    pub scopes: Vec<ScopeName>,
    /// RFC 3339 with any offset, in the future, e.g. `2027-01-01T00:00:00Z`; absent: the key
    /// does not expire.
    #[oai(validator(max_length = 64))]
    pub expires_at: Option<String>,
    /// Provider calls per UTC day; absent: the node's default (`auth.daily_provider_calls`).
    #[oai(validator(minimum(value = "0")))]
    pub daily_provider_calls: Option<i64>,
}

/// How a key is rotated.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct KeyRotate {
    /// How long the old key keeps working, in milliseconds; absent: `auth.rotation_grace_ms`.
    #[oai(validator(maximum(value = "31536000000")))]
    pub grace_ms: Option<u64>,
}

/// Every key, newest first.
#[derive(Debug, Clone, Object)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Debug, ApiResponse)]
enum IssuedResponse {
    /// The key was made; the token is in the body, once.
    #[oai(status = 201)]
    Created(Json<IssuedKeyView>),
}

/// API keys: made, listed, rotated and revoked by an `admin` key (each change audited under
/// the acting key's name by [`crate::auth::Authenticate`]). The CLI does the same with
/// `bulwark keys`.
#[derive(Debug)]
pub struct KeysApi {
    pub state: Arc<ApiState>,
}

fn parse_time(field: &str, text: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .map_err(|error| ApiError::invalid(format!("{field}: not an RFC 3339 time: {error}")))
}

#[OpenApi(tag = "ApiTags::Keys")]
impl KeysApi {
    /// Makes an API key. The token is returned once; only its keyed digest is stored.
    #[oai(path = "/v1/keys", method = "post", operation_id = "create_key")]
    async fn create(
        &self,
        _auth: AdminKey,
        body: StrictJson<KeyCreate>,
    ) -> ApiResult<IssuedResponse> {
        let body = body.0;
        let scopes: Vec<Scope> = body.scopes.iter().copied().map(Scope::from).collect();
        let expires_at_ms = body
            .expires_at
            .as_deref()
            .map(|text| parse_time("expires_at", text))
            .transpose()?;
        let issued = self
            .state
            .auth
            .authenticator
            .create_key(&NewKey {
                name: body.name,
                scopes: Scopes::new(&scopes),
                expires_at_ms,
                daily_provider_calls: body.daily_provider_calls,
            })
            .await?;
        Ok(IssuedResponse::Created(Json(IssuedKeyView::from(&issued))))
    }

    /// Lists every key, revoked and expired ones included, newest first.
    #[oai(path = "/v1/keys", method = "get", operation_id = "list_keys")]
    async fn list(&self, _auth: AdminKey) -> ApiResult<Json<KeyList>> {
        let keys = self.state.auth.authenticator.list_keys().await?;
        Ok(Json(KeyList {
            keys: keys.iter().map(KeyView::from).collect(),
        }))
    }

    /// Returns one key.
    #[oai(path = "/v1/keys/:id", method = "get", operation_id = "get_key")]
    async fn get(&self, _auth: AdminKey, id: Path<String>) -> ApiResult<Json<KeyView>> {
        let key = self.state.auth.authenticator.get_key(&id.0).await?;
        Ok(Json(KeyView::from(&key)))
    }

    /// Revokes a key: it stops working on this node at once, on every node within
    /// `auth.cache_refresh_ms`.
    #[oai(path = "/v1/keys/:id", method = "delete", operation_id = "revoke_key")]
    async fn revoke(&self, _auth: AdminKey, id: Path<String>) -> ApiResult<Json<KeyView>> {
        let key = self.state.auth.authenticator.revoke_key(&id.0).await?;
        Ok(Json(KeyView::from(&key)))
    }

    /// Replaces a key by a new one with the same name, scopes and budget; the old one keeps
    /// working for the grace period, then expires.
    #[oai(
        path = "/v1/keys/:id/rotate",
        method = "post",
        operation_id = "rotate_key"
    )]
    async fn rotate(
        &self,
        _auth: AdminKey,
        id: Path<String>,
        body: StrictJson<KeyRotate>,
    ) -> ApiResult<IssuedResponse> {
        let grace_opt = body.0.grace_ms.map(Duration::from_millis);
        let issued = self
            .state
            .auth
            .authenticator
            .rotate_key(&id.0, grace_opt)
            .await?;
        Ok(IssuedResponse::Created(Json(IssuedKeyView::from(&issued))))
    }
}
