use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bulwark_core::now_ms;
use bulwark_store::{ApiKeyRow, NewApiKeyRow, Store, StoreError, UsageCharge};
use tracing::{info, warn};
use uuid::Uuid;

use crate::metrics::KeysLoaded;
use crate::scope::{Scope, Scopes};
use crate::token::{KeyDigester, from_hex, generate_token, to_hex, visible_prefix};

/// The longest credential looked at; anything longer fails without being digested.
const MAX_PRESENTED_LEN: usize = 512;
/// A key's last-use time is written at most this often (it is kept in memory meanwhile).
const LAST_USED_FLUSH_MS: i64 = 60_000;
const MAX_NAME_LEN: usize = 64;
/// Recently verified tokens remembered at most; past this the memory starts over.
const MAX_RECENT: usize = 10_000;

/// What an [`Authenticator`] is started with.
#[derive(Clone)]
pub struct AuthParams {
    /// The configured server secret; `None` takes (or makes) the one kept in the database.
    pub secret_opt: Option<String>,
    /// How often the key cache is reloaded from the database.
    pub cache_refresh: Duration,
    /// How long a rotated key keeps working, unless the rotation says otherwise.
    pub rotation_grace: Duration,
    /// Provider calls per UTC day for keys that set no budget of their own.
    pub daily_provider_calls: u64,
}

impl std::fmt::Debug for AuthParams {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuthParams")
            .field("secret_opt", &self.secret_opt.as_ref().map(|_| "***"))
            .field("cache_refresh", &self.cache_refresh)
            .field("rotation_grace", &self.rotation_grace)
            .field("daily_provider_calls", &self.daily_provider_calls)
            .finish()
    }
}

/// Who a request is: the key that authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Shared, so the per-key rate-limit buckets are found without copying it.
    pub key_id: Arc<str>,
    /// The key's name, recorded in the audit log.
    pub name: String,
    pub scopes: Scopes,
    /// Provider calls this key may start per UTC day.
    pub daily_provider_calls: i64,
}

/// A key as shown to people: never the token, never the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Scopes,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub rotated_from: Option<String>,
    /// The key's own budget; `None` takes the configured default.
    pub daily_provider_calls: Option<i64>,
}

impl ApiKey {
    /// Returns `active`, `expired` or `revoked` at `at_ms`.
    pub fn status_at(&self, at_ms: i64) -> &'static str {
        if self.revoked_at_ms.is_some() {
            "revoked"
        } else if self.expires_at_ms.is_some_and(|expires| expires <= at_ms) {
            "expired"
        } else {
            "active"
        }
    }

    fn from_row(row: ApiKeyRow) -> Result<ApiKey, AuthError> {
        let scopes = Scopes::parse_list(&row.scopes).map_err(|error| {
            AuthError::Store(StoreError::corrupt(
                format!("api key {}: scopes", row.id),
                error,
            ))
        })?;
        Ok(ApiKey {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            scopes,
            created_at_ms: row.created_at_ms,
            expires_at_ms: row.expires_at_ms,
            last_used_at_ms: row.last_used_at_ms,
            revoked_at_ms: row.revoked_at_ms,
            rotated_from: row.rotated_from,
            daily_provider_calls: row.daily_provider_calls,
        })
    }
}

/// What a new key is made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub scopes: Scopes,
    pub expires_at_ms: Option<i64>,
    pub daily_provider_calls: Option<i64>,
}

/// A key just made, with its token: the only time the token is known.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub token: String,
}

/// Why a presented credential was refused. The client is told only that it is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No key has this token.
    Unknown,
    Expired,
    Revoked,
    /// The key could not be looked up: the database is down.
    Unavailable,
}

impl AuthFailure {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Unknown => "unknown",
            AuthFailure::Expired => "expired",
            AuthFailure::Revoked => "revoked",
            AuthFailure::Unavailable => "unavailable",
        }
    }
}

/// Why a key could not be managed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request breaks a rule; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("api key {0} does not exist")]
    NotFound(String),
    /// The key cannot be rotated: it is revoked or expired.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::Store(error) if error.is_retryable())
    }
}

/// The outcome of charging provider calls to a key's daily budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetCharge {
    Charged { used_today: i64, budget: i64 },
    OverBudget { used_today: i64, budget: i64 },
}

struct CachedKey {
    principal: Arc<Principal>,
    expires_at_ms: Option<i64>,
    last_used_ms: AtomicI64,
    flushed_ms: AtomicI64,
}

struct Inner {
    store: Store,
    digester: KeyDigester,
    params: AuthParams,
    /// Usable keys by digest.
    cache: RwLock<HashMap<[u8; 32], Arc<CachedKey>>>,
    /// Keys verified since the cache last changed, by a 128-bit SipHash of the token under
    /// keys random to this process: a repeat caller skips the HMAC. Emptied whenever `cache`
    /// changes, so a revocation or an expiry is never served from it.
    recent: RwLock<HashMap<u128, Arc<CachedKey>>>,
    recent_hashers: (std::hash::RandomState, std::hash::RandomState),
}

/// Verifies presented tokens against a cache of the usable keys, and manages keys. Cheap to
/// clone; one per node (the API) or per command (the CLI).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Authenticator")
    }
}

impl Authenticator {
    /// Resolves the server secret (configured, or the database's, made on first use) and
    /// loads the usable keys.
    pub async fn open(store: Store, params: AuthParams) -> Result<Authenticator, StoreError> {
        let secret = match &params.secret_opt {
            Some(secret) => secret.clone(),
            None => store.auth_secret_or_insert(&generate_token()).await?,
        };
        let authenticator = Authenticator {
            inner: Arc::new(Inner {
                store,
                digester: KeyDigester::new(secret.as_bytes()),
                params,
                cache: RwLock::new(HashMap::new()),
                recent: RwLock::new(HashMap::new()),
                recent_hashers: (std::hash::RandomState::new(), std::hash::RandomState::new()),
            }),
        };
        authenticator.refresh().await?;
        Ok(authenticator)
    }

    /// Returns the key a presented token belongs to, if it may be used now. Cached keys cost
    /// one HMAC and a map lookup; an unknown token costs one indexed query (failed attempts
    /// are rate limited per client IP by the caller).
    pub async fn verify(&self, presented: &str) -> Result<Arc<Principal>, AuthFailure> {
        if presented.is_empty() || presented.len() > MAX_PRESENTED_LEN {
            return Err(AuthFailure::Unknown);
        }
        let now = now_ms();
        let fingerprint = self.fingerprint(presented);
        let recent_opt = self.read_recent().get(&fingerprint).cloned();
        let cached = match recent_opt {
            Some(cached) => cached,
            None => {
                let digest = self.inner.digester.digest_bytes(presented);
                let cached_opt = self.read_cache().get(&digest).cloned();
                let cached = match cached_opt {
                    Some(cached) => cached,
                    None => self.load_one(digest, now).await?,
                };
                self.remember(fingerprint, &digest, &cached);
                cached
            }
        };
        if cached.expires_at_ms.is_some_and(|expires| expires <= now) {
            return Err(AuthFailure::Expired);
        }
        cached.last_used_ms.fetch_max(now, Ordering::Relaxed);
        Ok(cached.principal.clone())
    }

    /// Looks a digest up in the database after a cache miss (a key made on another node since
    /// the last refresh) and caches it when usable.
    async fn load_one(&self, digest: [u8; 32], now: i64) -> Result<Arc<CachedKey>, AuthFailure> {
        let row = self
            .inner
            .store
            .find_api_key_by_digest(&to_hex(&digest))
            .await
            .map_err(|error| {
                warn!(%error, "failed to look an api key up");
                AuthFailure::Unavailable
            })?
            .ok_or(AuthFailure::Unknown)?;
        if row.revoked_at_ms.is_some() {
            return Err(AuthFailure::Revoked);
        }
        if row.expires_at_ms.is_some_and(|expires| expires <= now) {
            return Err(AuthFailure::Expired);
        }
        let cached = self.cached_key(row).map_err(|_| AuthFailure::Unavailable)?;
        self.change_cache(|cache| {
            cache.insert(digest, cached.clone());
        });
        Ok(cached)
    }

    fn cached_key(&self, row: ApiKeyRow) -> Result<Arc<CachedKey>, AuthError> {
        let budget = row.daily_provider_calls.unwrap_or_else(|| {
            i64::try_from(self.inner.params.daily_provider_calls).unwrap_or(i64::MAX)
        });
        let last_used = row.last_used_at_ms.unwrap_or(0);
        let key = ApiKey::from_row(row)?;
        Ok(Arc::new(CachedKey {
            principal: Arc::new(Principal {
                key_id: Arc::from(key.id),
                name: key.name,
                scopes: key.scopes,
                daily_provider_calls: budget,
            }),
            expires_at_ms: key.expires_at_ms,
            last_used_ms: AtomicI64::new(last_used),
            flushed_ms: AtomicI64::new(last_used),
        }))
    }

    /// Puts a stored row in the cache, replacing the entry of its digest.
    fn cache_row(&self, row: ApiKeyRow) -> Result<(), AuthError> {
        let digest = from_hex(&row.digest).ok_or_else(|| {
            AuthError::Store(StoreError::corrupt(
                format!("api key {}: digest", row.id),
                "not 64 hex digits",
            ))
        })?;
        let cached = self.cached_key(row)?;
        self.change_cache(|cache| {
            cache.insert(digest, cached);
        });
        Ok(())
    }

    fn fingerprint(&self, presented: &str) -> u128 {
        use std::hash::BuildHasher;
        let (first, second) = &self.inner.recent_hashers;
        (u128::from(first.hash_one(presented)) << 64) | u128::from(second.hash_one(presented))
    }

    fn read_recent(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u128, Arc<CachedKey>>> {
        self.inner
            .recent
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_recent(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u128, Arc<CachedKey>>> {
        self.inner
            .recent
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], Arc<CachedKey>>> {
        self.inner
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the cache and forgets the recently verified tokens, under the cache's write
    /// lock (locks are always taken cache first, then recent).
    fn change_cache(&self, change: impl FnOnce(&mut HashMap<[u8; 32], Arc<CachedKey>>)) {
        let mut cache = self
            .inner
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut cache);
        self.write_recent().clear();
    }

    /// Remembers a verified token, unless the cache changed since it was read (so a revoked
    /// or re-expired key is never remembered).
    fn remember(&self, fingerprint: u128, digest: &[u8; 32], cached: &Arc<CachedKey>) {
        let cache = self.read_cache();
        if !cache
            .get(digest)
            .is_some_and(|current| Arc::ptr_eq(current, cached))
        {
            return;
        }
        let mut recent = self.write_recent();
        if recent.len() >= MAX_RECENT {
            recent.clear();
        }
        recent.insert(fingerprint, cached.clone());
    }

    /// Returns how often [`Authenticator::refresh`] should run.
    pub fn refresh_interval(&self) -> Duration {
        self.inner.params.cache_refresh
    }

    /// Writes last-use times that are due, then reloads the usable keys: revocations and
    /// expiries made on any node take effect here.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        self.flush_last_used().await?;
        let now = now_ms();
        let rows = self.inner.store.list_usable_api_keys(now).await?;
        let previous = self.read_cache().clone();
        let mut fresh = HashMap::with_capacity(rows.len());
        for row in rows {
            let Some(digest) = from_hex(&row.digest) else {
                warn!(
                    key_id = row.id,
                    "skipping an api key whose digest cannot be read"
                );
                continue;
            };
            let cached = match self.cached_key(row) {
                Ok(cached) => cached,
                Err(error) => {
                    warn!(%error, "skipping an api key that cannot be read");
                    continue;
                }
            };
            if let Some(old) = previous.get(&digest) {
                cached
                    .last_used_ms
                    .fetch_max(old.last_used_ms.load(Ordering::Relaxed), Ordering::Relaxed);
                cached
                    .flushed_ms
                    .fetch_max(old.flushed_ms.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            fresh.insert(digest, cached);
        }
        KeysLoaded {
            num_keys: fresh.len(),
        }
        .emit();
        self.change_cache(|cache| *cache = fresh);
        Ok(())
    }

    /// Writes last-use times held in memory for a minute or more.
    pub async fn flush_last_used(&self) -> Result<(), StoreError> {
        let due: Vec<(Arc<CachedKey>, i64)> = self
            .read_cache()
            .values()
            .filter_map(|cached| {
                let used = cached.last_used_ms.load(Ordering::Relaxed);
                let flushed = cached.flushed_ms.load(Ordering::Relaxed);
                (used > flushed && used - flushed >= LAST_USED_FLUSH_MS)
                    .then(|| (cached.clone(), used))
            })
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let times: Vec<(String, i64)> = due
            .iter()
            .map(|(cached, used)| (cached.principal.key_id.to_string(), *used))
            .collect();
        self.inner.store.touch_api_keys(&times).await?;
        for (cached, used) in due {
            cached.flushed_ms.fetch_max(used, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Makes a key and returns it with its token.
    pub async fn create_key(&self, new_key: &NewKey) -> Result<IssuedKey, AuthError> {
        self.create_key_from(new_key, None).await
    }

    async fn create_key_from(
        &self,
        new_key: &NewKey,
        rotated_from: Option<String>,
    ) -> Result<IssuedKey, AuthError> {
        validate_new_key(new_key, now_ms())?;
        let token = generate_token();
        let key = self.store_key(new_key, &token, rotated_from).await?;
        info!(key_id = key.id, name = key.name, scopes = %key.scopes, "api key created");
        Ok(IssuedKey { key, token })
    }

    async fn store_key(
        &self,
        new_key: &NewKey,
        token: &str,
        rotated_from: Option<String>,
    ) -> Result<ApiKey, AuthError> {
        let row = self
            .inner
            .store
            .insert_api_key(&NewApiKeyRow {
                id: Uuid::now_v7().to_string(),
                name: new_key.name.clone(),
                prefix: visible_prefix(token),
                digest: self.inner.digester.digest(token),
                scopes: new_key.scopes.to_string(),
                expires_at_ms: new_key.expires_at_ms,
                rotated_from,
                daily_provider_calls: new_key.daily_provider_calls,
            })
            .await?;
        self.cache_row(row.clone())?;
        ApiKey::from_row(row)
    }

    /// Makes sure a key with this exact token exists (the bootstrap admin key, the legacy
    /// operator token). A key with the token that was revoked stays revoked.
    pub async fn ensure_key(&self, new_key: &NewKey, token: &str) -> Result<ApiKey, AuthError> {
        if token.is_empty() || token.len() > MAX_PRESENTED_LEN {
            return Err(AuthError::Invalid(format!(
                "{}: a token must have 1 to {MAX_PRESENTED_LEN} characters",
                new_key.name
            )));
        }
        let digest = self.inner.digester.digest(token);
        if let Some(row) = self.inner.store.find_api_key_by_digest(&digest).await? {
            let key = ApiKey::from_row(row)?;
            if key.revoked_at_ms.is_some() {
                warn!(
                    key_id = key.id,
                    name = key.name,
                    "a configured key was revoked and stays revoked"
                );
            }
            return Ok(key);
        }
        validate_new_key(new_key, now_ms())?;
        let key = self.store_key(new_key, token, None).await?;
        info!(key_id = key.id, name = key.name, scopes = %key.scopes, "configured api key registered");
        Ok(key)
    }

    /// Returns every key, revoked ones included, newest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, AuthError> {
        let rows = self.inner.store.list_api_keys().await?;
        rows.into_iter().map(ApiKey::from_row).collect()
    }

    pub async fn get_key(&self, id: &str) -> Result<ApiKey, AuthError> {
        let row = self
            .inner
            .store
            .get_api_key(id)
            .await?
            .ok_or_else(|| AuthError::NotFound(id.to_owned()))?;
        ApiKey::from_row(row)
    }

    /// Revokes a key on this node at once (other nodes within `cache_refresh`).
    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey, AuthError> {
        let row = self
            .inner
            .store
            .revoke_api_key(id)
            .await?
            .ok_or_else(|| AuthError::NotFound(id.to_owned()))?;
        if let Some(digest) = from_hex(&row.digest) {
            self.change_cache(|cache| {
                cache.remove(&digest);
            });
        }
        let key = ApiKey::from_row(row)?;
        info!(key_id = key.id, name = key.name, "api key revoked");
        Ok(key)
    }

    /// Replaces a key by a new one with the same name, scopes and budget; the old key keeps
    /// working for `grace` (the configured grace when `None`), then expires.
    pub async fn rotate_key(
        &self,
        id: &str,
        grace_opt: Option<Duration>,
    ) -> Result<IssuedKey, AuthError> {
        let old = self.get_key(id).await?;
        let now = now_ms();
        if old.status_at(now) != "active" {
            return Err(AuthError::Conflict(format!(
                "api key {id} is {} and cannot be rotated",
                old.status_at(now)
            )));
        }
        let grace = grace_opt.unwrap_or(self.inner.params.rotation_grace);
        let issued = self
            .create_key_from(
                &NewKey {
                    name: old.name.clone(),
                    scopes: old.scopes,
                    expires_at_ms: old.expires_at_ms,
                    daily_provider_calls: old.daily_provider_calls,
                },
                Some(old.id.clone()),
            )
            .await?;
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let row = self
            .inner
            .store
            .expire_api_key_by(&old.id, now.saturating_add(grace_ms))
            .await?
            .ok_or_else(|| AuthError::NotFound(id.to_owned()))?;
        self.cache_row(row)?;
        info!(
            old_key_id = old.id,
            new_key_id = issued.key.id,
            grace_ms,
            "api key rotated"
        );
        Ok(issued)
    }

    /// Charges `calls` provider calls to the key's budget for today (UTC).
    pub async fn charge_provider_calls(
        &self,
        principal: &Principal,
        calls: i64,
    ) -> Result<BudgetCharge, StoreError> {
        let budget = principal.daily_provider_calls;
        let day = utc_day(now_ms());
        let charge = self
            .inner
            .store
            .charge_provider_calls(&principal.key_id, &day, calls, budget)
            .await?;
        Ok(match charge {
            UsageCharge::Charged { used_today } => BudgetCharge::Charged { used_today, budget },
            UsageCharge::OverBudget { used_today } => {
                BudgetCharge::OverBudget { used_today, budget }
            }
        })
    }

    /// Gives back calls charged for work that was not created after all.
    pub async fn refund_provider_calls(
        &self,
        principal: &Principal,
        calls: i64,
    ) -> Result<(), StoreError> {
        let day = utc_day(now_ms());
        self.inner
            .store
            .refund_provider_calls(&principal.key_id, &day, calls)
            .await
    }
}

fn validate_new_key(new_key: &NewKey, now: i64) -> Result<(), AuthError> {
    let name_ok = !new_key.name.is_empty()
        && new_key.name.len() <= MAX_NAME_LEN
        && new_key
            .name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.@".contains(&byte));
    if !name_ok {
        return Err(AuthError::Invalid(format!(
            "name: must be 1 to {MAX_NAME_LEN} characters of letters, digits, `-`, `_`, `.`, `@`"
        )));
    }
    if new_key.scopes.is_empty() {
        return Err(AuthError::Invalid(format!(
            "scopes: name at least one of {}",
            Scope::ALL.map(Scope::as_str).join(", ")
        )));
    }
    if new_key.expires_at_ms.is_some_and(|expires| expires <= now) {
        return Err(AuthError::Invalid(
            "expires_at: must be in the future".to_owned(),
        ));
    }
    if new_key
        .daily_provider_calls
        .is_some_and(|budget| budget < 0)
    {
        return Err(AuthError::Invalid(
            "daily_provider_calls: must be 0 or more".to_owned(),
        ));
    }
    Ok(())
}

/// Returns the UTC day of a Unix millisecond time as `YYYY-MM-DD`.
pub fn utc_day(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves UTC days are computed across leap years and the epoch.
    #[test]
    fn utc_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(utc_day(1_796_515_199_999), "2026-12-05");
        assert_eq!(utc_day(1_796_515_200_000), "2026-12-06");
    }

    /// Proves new keys need a safe name, a scope, a future expiry and a non-negative budget.
    #[test]
    fn new_keys_are_validated() {
        let valid = NewKey {
            name: "ci-bot".to_owned(),
            scopes: Scopes::new(&[Scope::Read]),
            expires_at_ms: Some(2_000),
            daily_provider_calls: Some(0),
        };
        assert!(validate_new_key(&valid, 1_000).is_ok());
        let cases = [
            NewKey {
                name: String::new(),
                ..valid.clone()
            },
            NewKey {
                name: "a b".to_owned(),
                ..valid.clone()
            },
            NewKey {
                scopes: Scopes::default(),
                ..valid.clone()
            },
            NewKey {
                expires_at_ms: Some(500),
                ..valid.clone()
            },
            NewKey {
                daily_provider_calls: Some(-1),
                ..valid.clone()
            },
        ];
        for case in cases {
            assert!(
                matches!(validate_new_key(&case, 1_000), Err(AuthError::Invalid(_))),
                "{case:?}"
            );
        }
    }
}
