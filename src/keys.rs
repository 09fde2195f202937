//! API keys in the binary: the node's [`ApiAuth`] built from `[auth]` (server secret, the
//! bootstrap admin key, the legacy operator token), and `bulwark keys create|list|revoke|rotate`
//! straight on the database.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bulwark_api::{ApiAuth, OpenEndpoints};
use bulwark_auth::{
    ApiKey, AuthParams, Authenticator, IssuedKey, NewKey, RateLimiters, Scope, Scopes,
};
use bulwark_config::Config;
use bulwark_core::now_ms;
use bulwark_store::Store;
use clap::{Args, Subcommand};
use tracing::{info, warn};

/// The name the bootstrap admin key is registered under.
pub const BOOTSTRAP_KEY_NAME: &str = "bootstrap";
/// The name the legacy operator token is registered under.
pub const LEGACY_OPERATOR_KEY_NAME: &str = "legacy-operator-token";

/// Opens the authenticator of `config` on `store`: the configured server secret, or the one
/// kept in the database.
pub async fn open_authenticator(
    config: &Config,
    store: &Store,
    env: &HashMap<String, String>,
) -> anyhow::Result<Authenticator> {
    let secret_opt = match &config.auth.secret {
        Some(secret_ref) => Some(
            secret_ref
                .resolve(env)
                .map_err(|error| anyhow::anyhow!("auth.secret: {error}"))?,
        ),
        None => None,
    };
    let params = AuthParams {
        secret_opt,
        cache_refresh: Duration::from_millis(config.auth.cache_refresh_ms),
        rotation_grace: Duration::from_millis(config.auth.rotation_grace_ms),
        daily_provider_calls: config.auth.daily_provider_calls,
    };
    Authenticator::open(store.clone(), params)
        .await
        .context("failed to load the api keys")
}

/// Builds what the API checks keys and limits with, after registering the configured keys.
pub async fn api_auth(
    config: &Config,
    store: &Store,
    env: &HashMap<String, String>,
) -> anyhow::Result<Arc<ApiAuth>> {
    let authenticator = open_authenticator(config, store, env).await?;
    register_configured_keys(&authenticator, config, env).await?;
    Ok(Arc::new(ApiAuth {
        authenticator,
        store: store.clone(),
        limiters: RateLimiters::new(&config.auth.rate_limits),
        open: OpenEndpoints::from_names(&config.auth.open_endpoints),
    }))
}

/// Registers the bootstrap admin key (`auth.bootstrap_admin_key`) and the legacy operator
/// token (`ops.token_env`, as an `operate` key) when they are set.
async fn register_configured_keys(
    authenticator: &Authenticator,
    config: &Config,
    env: &HashMap<String, String>,
) -> anyhow::Result<()> {
    let bootstrap_opt = match &config.auth.bootstrap_admin_key {
        Some(secret_ref) => secret_ref
            .resolve_if_set(env)
            .map_err(|error| anyhow::anyhow!("auth.bootstrap_admin_key: {error}"))?,
        None => None,
    };
    if let Some(token) = bootstrap_opt {
        if !bulwark_auth::is_token_shaped(&token) {
            anyhow::bail!(
                "auth.bootstrap_admin_key: not a bulwark key (`bwk_` and 43 base64url \
                 characters); make one with `bulwark keys generate`"
            );
        }
        let new_key = NewKey {
            name: BOOTSTRAP_KEY_NAME.to_owned(),
            scopes: Scopes::new(&[Scope::Admin]),
            expires_at_ms: None,
            daily_provider_calls: None,
        };
        authenticator.ensure_key(&new_key, &token).await?;
    }
    if let Some(token) = env
        .get(&config.ops.token_env)
        .filter(|token| !token.is_empty())
    {
        warn!(
            variable = config.ops.token_env,
            "the operator token is deprecated: it works as an `operate` key named \
             `legacy-operator-token`; make a key with `bulwark keys create --scope operate`, \
             then unset the variable and revoke that key"
        );
        let new_key = NewKey {
            name: LEGACY_OPERATOR_KEY_NAME.to_owned(),
            scopes: Scopes::new(&[Scope::Operate]),
            expires_at_ms: None,
            daily_provider_calls: None,
        };
        authenticator.ensure_key(&new_key, token).await?;
    }
    Ok(())
}

/// `bulwark keys …`: manage API keys on the configured database.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Makes a key and prints its token once (only its digest is stored).
    Create {
        /// Letters, digits, `-`, `_`, `.`, `@`; the audit log names the key's actions by it.
        #[arg(long)]
        name: String,
        /// `read`, `submit`, `operate` or `admin` (repeat, or comma-separate).
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Lifetime, e.g. `30d`, `12h`; the key does not expire without it.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// Provider calls per UTC day; the node's default without it.
        #[arg(long)]
        daily_provider_calls: Option<u32>,
    },
    /// Lists every key (never the tokens).
    List {
        /// Prints JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a key: it stops working on every node within `auth.cache_refresh_ms`.
    Revoke { id: String },
    /// Replaces a key by a new one (printed once); the old one works for the grace period.
    Rotate {
        id: String,
        /// How long the old key keeps working, e.g. `1h`; default `auth.rotation_grace_ms`.
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
    },
    /// Prints a new random token without storing it, e.g. for `BULWARK_BOOTSTRAP_ADMIN_KEY`.
    Generate,
}

/// Exit code for bad arguments, as for a bad configuration.
const EXIT_BAD_INPUT: u8 = 2;

/// Runs a `bulwark keys` command. Bad arguments exit 2, naming the problem.
pub async fn run(config: &Config, args: &KeysArgs) -> anyhow::Result<ExitCode> {
    if matches!(args.action, KeysAction::Generate) {
        println!("{}", bulwark_auth::generate_token());
        return Ok(ExitCode::SUCCESS);
    }
    let store = crate::service::open_store(config).await?;
    let env: HashMap<String, String> = std::env::vars().collect();
    let authenticator = open_authenticator(config, &store, &env).await?;
    let outcome = act(&authenticator, &args.action).await;
    store.close().await;
    match outcome {
        Ok(code) => Ok(code),
        Err(KeysCliError::BadInput(message)) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
        Err(KeysCliError::Failed(error)) => Err(error),
    }
}

#[derive(Debug)]
enum KeysCliError {
    BadInput(String),
    Failed(anyhow::Error),
}

impl From<bulwark_auth::AuthError> for KeysCliError {
    fn from(error: bulwark_auth::AuthError) -> Self {
        match error {
            bulwark_auth::AuthError::Invalid(_)
            | bulwark_auth::AuthError::NotFound(_)
            | bulwark_auth::AuthError::Conflict(_) => KeysCliError::BadInput(error.to_string()),
            bulwark_auth::AuthError::Store(store_error) => {
                KeysCliError::Failed(anyhow::Error::new(store_error))
            }
        }
    }
}

fn parse_duration(flag: &str, text: &str) -> Result<Duration, KeysCliError> {
    humantime::parse_duration(text)
        .map_err(|error| KeysCliError::BadInput(format!("--{flag}: `{text}`: {error}")))
}

async fn act(authenticator: &Authenticator, action: &KeysAction) -> Result<ExitCode, KeysCliError> {
    match action {
        KeysAction::Create {
            name,
            scopes,
            expires_in,
            daily_provider_calls,
        } => {
            let scopes = Scopes::parse_list(&scopes.join(","))
                .map_err(|error| KeysCliError::BadInput(format!("--scope: {error}")))?;
            let expires_at_ms = match expires_in {
                Some(text) => {
                    let lifetime = parse_duration("expires-in", text)?;
                    let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
                    Some(now_ms().saturating_add(lifetime_ms))
                }
                None => None,
            };
            let issued = authenticator
                .create_key(&NewKey {
                    name: name.clone(),
                    scopes,
                    expires_at_ms,
                    daily_provider_calls: daily_provider_calls.map(i64::from),
                })
                .await?;
            print_issued(&issued);
        }
        KeysAction::List { json } => {
            let keys = authenticator.list_keys().await?;
            if *json {
                let rows: Vec<serde_json::Value> = keys.iter().map(key_json).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            } else {
                print_table(&keys);
            }
        }
        KeysAction::Revoke { id } => {
            let key = authenticator.revoke_key(id).await?;
            println!("revoked {} ({}, {})", key.id, key.name, key.prefix);
        }
        KeysAction::Rotate { id, grace } => {
            let grace_opt = grace
                .as_deref()
                .map(|text| parse_duration("grace", text))
                .transpose()?;
            let issued = authenticator.rotate_key(id, grace_opt).await?;
            print_issued(&issued);
            info!(
                old_key_id = id,
                "the old key works until its grace period ends"
            );
        }
        KeysAction::Generate => println!("{}", bulwark_auth::generate_token()),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_issued(issued: &IssuedKey) {
    eprintln!(
        "created key {} ({}, scopes {}); the token below is shown once, store it now:",
        issued.key.id, issued.key.name, issued.key.scopes
    );
    println!("{}", issued.token);
}

fn key_json(key: &ApiKey) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes.to_string(),
        "status": key.status_at(now_ms()),
        "created_at_ms": key.created_at_ms,
        "expires_at_ms": key.expires_at_ms,
        "last_used_at_ms": key.last_used_at_ms,
        "revoked_at_ms": key.revoked_at_ms,
        "rotated_from": key.rotated_from,
        "daily_provider_calls": key.daily_provider_calls,
    })
}

fn print_table(keys: &[ApiKey]) {
    println!(
        "{:<36}  {:<24}  {:<12}  {:<8}  scopes",
        "id", "name", "prefix", "status"
    );
    let now = now_ms();
    for key in keys {
        println!(
            "{:<36}  {:<24}  {:<12}  {:<8}  {}",
            key.id,
            key.name,
            key.prefix,
            key.status_at(now),
            key.scopes
        );
    }
}
