//! The `[providers.<name>]` sections: the answer engines this node can ask, their API-key
//! references and their resilience settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SecretRef;

/// Default of `max_response_bytes`: far above any completion bounded by `max_tokens`, far below
/// what would hurt a node.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Smallest accepted `max_response_bytes`: below this, ordinary answers would be refused.
const MIN_MAX_RESPONSE_BYTES: usize = 1024;

/// Configured providers by name (`[providers.openai]`, `[providers.sim]`...).
pub type ProvidersConfig = BTreeMap<String, ProviderConfig>;

/// Which adapter serves a provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions (`{base_url}/chat/completions`).
    Openai,
    /// Anthropic Messages API (`{base_url}/messages`).
    Anthropic,
    /// The simulated engine, in-process (no HTTP).
    #[default]
    Simulated,
}

/// Faults of an in-process simulated provider (see `FaultKnobs` in `bulwark-providers`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedFaultsConfig {
    pub latency_ms: u64,
    pub latency_jitter_ms: u64,
    pub slow_rate: f64,
    pub slow_ms: u64,
    pub hang_rate: f64,
    pub drop_rate: f64,
    pub error_rate: f64,
    pub rate_limit_rate: f64,
    pub retry_after_ms: u64,
    pub malformed_rate: f64,
}

/// One provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Unset: `https://api.openai.com/v1` or `https://api.anthropic.com/v1` by kind. Must be
    /// `https://` unless `allow_plain_http` is set.
    pub base_url: Option<String>,
    /// Accepts an `http://` base URL: for the simulator and servers on a trusted network only,
    /// since the API key and every prompt then travel in clear text.
    pub allow_plain_http: bool,
    /// Largest answer body read from the provider; a larger one fails the attempt with
    /// `RESPONSE_TOO_LARGE` (retried, counted by the breaker) without being buffered.
    pub max_response_bytes: usize,
    /// Unset: `gpt-4o-mini`, `claude-3-5-haiku-latest` or `bulwark-sim-1` by kind.
    pub model: Option<String>,
    pub api_key: Option<SecretRef>,
    /// Answer budget for requests that set none (Anthropic requires one).
    pub default_max_tokens: u32,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    /// Longest wait for one attempt.
    pub attempt_timeout_ms: u64,
    /// Longest one call may take in all, retries and waits included.
    pub call_deadline_ms: u64,
    /// Attempts per call (1 = no retries); only retriable errors are retried.
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    /// Calls upstream at once...
    pub max_concurrent: usize,
    /// ... and callers waiting for a slot; beyond that, calls fail at once with `BULKHEAD_FULL`.
    pub max_waiting: usize,
    pub breaker_window_ms: u64,
    pub breaker_min_calls: u32,
    pub breaker_max_failures: u32,
    pub breaker_failure_ratio: f64,
    pub breaker_open_ms: u64,
    pub breaker_half_open_probes: u32,
    /// Providers tried in order when this one fails.
    pub fallback: Vec<String>,
    /// Simulated kind only: the answer seed and the brands it speaks of besides the prompt's.
    pub seed: u64,
    pub brands: Vec<String>,
    pub faults: SimulatedFaultsConfig,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: ProviderKind::Simulated,
            base_url: None,
            allow_plain_http: false,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            model: None,
            api_key: None,
            default_max_tokens: 1_024,
            connect_timeout_ms: 2_000,
            read_timeout_ms: 30_000,
            attempt_timeout_ms: 30_000,
            call_deadline_ms: 60_000,
            max_attempts: 3,
            retry_base_ms: 200,
            retry_max_ms: 5_000,
            requests_per_minute: None,
            tokens_per_minute: None,
            max_concurrent: 32,
            max_waiting: 64,
            breaker_window_ms: 30_000,
            breaker_min_calls: 10,
            breaker_max_failures: 10,
            breaker_failure_ratio: 0.5,
            breaker_open_ms: 15_000,
            breaker_half_open_probes: 2,
            fallback: Vec::new(),
            seed: 7,
            brands: Vec::new(),
            faults: SimulatedFaultsConfig::default(),
        }
    }
}

impl ProviderConfig {
    pub fn base_url(&self) -> String {
        match (&self.base_url, self.kind) {
            (Some(url), _) => url.clone(),
            (None, ProviderKind::Openai) => "https://api.openai.com/v1".to_owned(),
            (None, ProviderKind::Anthropic) => "https://api.anthropic.com/v1".to_owned(),
            (None, ProviderKind::Simulated) => String::new(),
        }
    }

    pub fn model(&self) -> String {
        match (&self.model, self.kind) {
            (Some(model), _) => model.clone(),
            (None, ProviderKind::Openai) => "gpt-4o-mini".to_owned(),
            (None, ProviderKind::Anthropic) => "claude-3-5-haiku-latest".to_owned(),
            (None, ProviderKind::Simulated) => "bulwark-sim-1".to_owned(),
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.attempt_timeout_ms)
    }

    pub fn call_deadline(&self) -> Duration {
        Duration::from_millis(self.call_deadline_ms)
    }
}

/// Checks the providers; returns the offending key and why. Pure.
pub fn validate_providers(providers: &ProvidersConfig) -> Result<(), (String, String)> {
    for (name, provider) in providers {
        let key = |field: &str| format!("providers.{name}.{field}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err((
                format!("providers.{name}"),
                "names use letters, digits, `-` and `_`".to_owned(),
            ));
        }
        let positive: [(&str, u64); 9] = [
            ("default_max_tokens", provider.default_max_tokens.into()),
            ("connect_timeout_ms", provider.connect_timeout_ms),
            ("read_timeout_ms", provider.read_timeout_ms),
            ("attempt_timeout_ms", provider.attempt_timeout_ms),
            ("call_deadline_ms", provider.call_deadline_ms),
            ("max_attempts", provider.max_attempts.into()),
            ("max_concurrent", provider.max_concurrent as u64),
            ("breaker_min_calls", provider.breaker_min_calls.into()),
            (
                "breaker_half_open_probes",
                provider.breaker_half_open_probes.into(),
            ),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err((key(field), "must be greater than 0".to_owned()));
            }
        }
        if !(0.0..=1.0).contains(&provider.breaker_failure_ratio)
            || provider.breaker_failure_ratio == 0.0
        {
            return Err((key("breaker_failure_ratio"), "must be in (0, 1]".to_owned()));
        }
        for (field, limit) in [
            ("requests_per_minute", provider.requests_per_minute),
            ("tokens_per_minute", provider.tokens_per_minute),
        ] {
            if limit == Some(0) {
                return Err((
                    key(field),
                    "must be greater than 0 (unset means unlimited)".to_owned(),
                ));
            }
        }
        if let Some(secret_ref) = &provider.api_key
            && secret_ref.env.is_some() == secret_ref.file.is_some()
        {
            return Err((
                key("api_key"),
                "set exactly one of `env` or `file`".to_owned(),
            ));
        }
        if provider.kind != ProviderKind::Simulated {
            validate_base_url(name, provider)?;
            if provider.max_response_bytes < MIN_MAX_RESPONSE_BYTES {
                return Err((
                    key("max_response_bytes"),
                    format!("must be at least {MIN_MAX_RESPONSE_BYTES}"),
                ));
            }
        }
        let faults = &provider.faults;
        for (field, rate) in [
            ("slow_rate", faults.slow_rate),
            ("hang_rate", faults.hang_rate),
            ("drop_rate", faults.drop_rate),
            ("error_rate", faults.error_rate),
            ("rate_limit_rate", faults.rate_limit_rate),
            ("malformed_rate", faults.malformed_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err((
                    key(&format!("faults.{field}")),
                    format!("must be between 0 and 1, got {rate}"),
                ));
            }
        }
        for fallback in &provider.fallback {
            if fallback == name || !providers.contains_key(fallback) {
                return Err((
                    key("fallback"),
                    format!("`{fallback}` is not another configured provider"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks that an HTTP provider's base URL is `https://`, or `http://` with
/// `allow_plain_http`. The URL itself is not echoed: it may carry credentials.
fn validate_base_url(name: &str, provider: &ProviderConfig) -> Result<(), (String, String)> {
    let base_url = provider.base_url();
    let scheme = base_url.split_once("://").map_or("", |(scheme, _)| scheme);
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if provider.allow_plain_http => Ok(()),
        "http" => Err((
            format!("providers.{name}.base_url"),
            format!(
                "plain http:// sends the API key and prompts in clear text: use https://, or set \
                 providers.{name}.allow_plain_http = true for the simulator or a local server"
            ),
        )),
        _ => Err((
            format!("providers.{name}.base_url"),
            "is not an https:// URL".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(text: &str) -> Result<ProvidersConfig, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            providers: ProvidersConfig,
        }
        toml::from_str::<Wrapper>(text)
            .map(|wrapper| wrapper.providers)
            .map_err(|error| error.to_string())
    }

    /// Proves an inline key is refused without being echoed, and a reference resolves from the
    /// environment passed in.
    #[test]
    fn api_keys_are_references() {
        let path =
            std::env::temp_dir().join(format!("bulwark-inline-key-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[providers.openai]\nkind = \"openai\"\napi_key = \"sk-inline-secret\"\n",
        )
        .unwrap();
        let sources = crate::ConfigSources {
            explicit_file: Some(path.clone()),
            env: HashMap::new(),
        };
        let error = crate::load(&sources).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert!(error.contains("providers.openai.api_key"), "{error}");
        assert!(error.contains("inline secrets are not accepted"), "{error}");
        assert!(!error.contains("sk-inline-secret"), "{error}");

        let providers =
            parse("[providers.openai]\nkind = \"openai\"\napi_key = { env = \"OPENAI_KEY\" }")
                .unwrap();
        let secret_ref = providers["openai"].api_key.clone().unwrap();
        let env = HashMap::from([("OPENAI_KEY".to_owned(), "sk-from-env".to_owned())]);
        assert_eq!(secret_ref.resolve(&env).unwrap(), "sk-from-env");
        assert_eq!(
            secret_ref.resolve_if_set(&env).unwrap().as_deref(),
            Some("sk-from-env")
        );
        assert_eq!(secret_ref.resolve_if_set(&HashMap::new()).unwrap(), None);
        let missing_file = SecretRef {
            env: None,
            file: Some("/nonexistent/bulwark-secret".to_owned()),
        };
        assert!(missing_file.resolve_if_set(&HashMap::new()).is_err());
        assert!(
            secret_ref
                .resolve(&HashMap::new())
                .unwrap_err()
                .contains("OPENAI_KEY")
        );
        let shown = toml::to_string(&providers).unwrap();
        assert!(shown.contains("OPENAI_KEY") && !shown.contains("sk-from-env"));
    }

    /// Proves validation names the key at fault.
    #[test]
    fn validation_names_the_key() {
        let providers =
            parse("[providers.a]\nfallback = [\"b\"]\n[providers.c]\nmax_concurrent = 0\n")
                .unwrap();
        let (key, _) = validate_providers(&providers).unwrap_err();
        assert_eq!(key, "providers.a.fallback");
        let providers = parse("[providers.c]\nmax_concurrent = 0\n").unwrap();
        assert_eq!(
            validate_providers(&providers).unwrap_err().0,
            "providers.c.max_concurrent"
        );
        let providers = parse("[providers.c]\nfaults = { error_rate = 2.0 }\n").unwrap();
        assert_eq!(
            validate_providers(&providers).unwrap_err().0,
            "providers.c.faults.error_rate"
        );
        let providers = parse("[providers.ok]\nkind = \"anthropic\"\n").unwrap();
        assert!(validate_providers(&providers).is_ok());
        let providers =
            parse("[providers.big]\nkind = \"openai\"\nmax_response_bytes = 10\n").unwrap();
        assert_eq!(
            validate_providers(&providers).unwrap_err().0,
            "providers.big.max_response_bytes"
        );
    }

    /// Proves an HTTP provider's base URL must be https:// unless `allow_plain_http` is set,
    /// that the refusal names the key and the flag, and that the simulated kind needs neither.
    #[test]
    fn base_url_must_be_https_unless_plain_http_is_allowed() {
        let plain =
            "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9090/v1\"\n";
        let (key, message) = validate_providers(&parse(plain).unwrap()).unwrap_err();
        assert_eq!(key, "providers.local.base_url");
        assert!(
            message.contains("providers.local.allow_plain_http"),
            "{message}"
        );
        let allowed = format!("{plain}allow_plain_http = true\n");
        assert!(validate_providers(&parse(&allowed).unwrap()).is_ok());
        let secure =
            "[providers.remote]\nkind = \"anthropic\"\nbase_url = \"HTTPS://llm.example/v1\"\n";
        assert!(validate_providers(&parse(secure).unwrap()).is_ok());
        let other = "[providers.odd]\nkind = \"openai\"\nbase_url = \"ftp://user:pw@host/v1\"\nallow_plain_http = true\n";
        let (key, message) = validate_providers(&parse(other).unwrap()).unwrap_err();
        assert_eq!(key, "providers.odd.base_url");
        assert!(!message.contains("pw@host"), "{message}");
        let simulated = "[providers.sim]\nkind = \"simulated\"\n";
        assert!(validate_providers(&parse(simulated).unwrap()).is_ok());
    }
}
