//! Turns the `[providers.<name>]` sections into adapters wrapped in their resilience, resolving
//! API-key references from the environment (or files) at start-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bulwark_config::{Config, ProviderConfig, ProviderKind, SimulatedFaultsConfig};
use bulwark_providers::simulated::{
    FaultKnobs, SimulatedEngine, SimulatedEngineParams, SimulatedProvider,
};
use bulwark_providers::{
    AnthropicProvider, ApiKey, BreakerParams, BulkheadParams, HttpProviderParams, OpenAiProvider,
    Provider, RateLimitParams, ResilienceParams, ResilientProvider, RetryParams,
};
use bulwark_supervisors::{ProviderSpec, ProvidersSettings};

/// Returns the providers subsystem's settings, or `None` when no provider is configured.
pub fn providers_settings(
    config: &Config,
    env: &HashMap<String, String>,
) -> anyhow::Result<Option<ProvidersSettings>> {
    if config.providers.is_empty() {
        return Ok(None);
    }
    let mut providers = Vec::with_capacity(config.providers.len());
    for (name, provider_config) in &config.providers {
        let adapter = build_adapter(name, provider_config, env)?;
        providers.push(ProviderSpec {
            provider: ResilientProvider::new(adapter, resilience_params(provider_config)),
            fallbacks: provider_config.fallback.clone(),
        });
    }
    Ok(Some(ProvidersSettings { providers }))
}

/// Returns the bare adapter (one attempt per call) a provider's section describes.
pub fn build_adapter(
    name: &str,
    provider_config: &ProviderConfig,
    env: &HashMap<String, String>,
) -> anyhow::Result<Arc<dyn Provider>> {
    let api_key_opt = match &provider_config.api_key {
        Some(secret_ref) => {
            Some(ApiKey::new(secret_ref.resolve(env).map_err(|message| {
                anyhow::anyhow!("providers.{name}.api_key: {message}")
            })?))
        }
        None => None,
    };
    let http_params = HttpProviderParams {
        name: name.to_owned(),
        base_url: provider_config.base_url(),
        model: provider_config.model(),
        api_key_opt,
        default_max_tokens: provider_config.default_max_tokens,
        connect_timeout: provider_config.connect_timeout(),
        read_timeout: provider_config.read_timeout(),
        max_response_bytes: provider_config.max_response_bytes,
        allow_plain_http: provider_config.allow_plain_http,
    };
    let adapter: Arc<dyn Provider> = match provider_config.kind {
        ProviderKind::Openai => Arc::new(
            OpenAiProvider::new(http_params)
                .with_context(|| format!("failed to build provider {name}"))?,
        ),
        ProviderKind::Anthropic => Arc::new(
            AnthropicProvider::new(http_params)
                .with_context(|| format!("failed to build provider {name}"))?,
        ),
        ProviderKind::Simulated => {
            let mut engine = SimulatedEngineParams {
                seed: provider_config.seed,
                model: provider_config.model(),
                ..SimulatedEngineParams::default()
            };
            if !provider_config.brands.is_empty() {
                engine.brands = provider_config.brands.clone();
            }
            Arc::new(SimulatedProvider::new(
                name,
                SimulatedEngine::new(engine),
                fault_knobs(&provider_config.faults),
            ))
        }
    };
    Ok(adapter)
}

/// Returns the resilience a provider's section asks for.
pub fn resilience_params(provider_config: &ProviderConfig) -> ResilienceParams {
    ResilienceParams {
        attempt_timeout: provider_config.attempt_timeout(),
        call_deadline: provider_config.call_deadline(),
        retry: RetryParams {
            max_attempts: provider_config.max_attempts,
            base: Duration::from_millis(provider_config.retry_base_ms),
            max: Duration::from_millis(provider_config.retry_max_ms),
        },
        breaker: BreakerParams {
            window: Duration::from_millis(provider_config.breaker_window_ms),
            min_calls: provider_config.breaker_min_calls,
            max_failures: provider_config.breaker_max_failures,
            failure_ratio: provider_config.breaker_failure_ratio,
            open_for: Duration::from_millis(provider_config.breaker_open_ms),
            half_open_probes: provider_config.breaker_half_open_probes,
        },
        rate_limit: RateLimitParams {
            requests_per_minute: provider_config.requests_per_minute,
            tokens_per_minute: provider_config.tokens_per_minute,
        },
        bulkhead: BulkheadParams {
            max_concurrent: provider_config.max_concurrent,
            max_waiting: provider_config.max_waiting,
        },
        default_max_tokens: provider_config.default_max_tokens,
    }
}

/// Returns the simulator's fault knobs from their config section.
pub fn fault_knobs(faults: &SimulatedFaultsConfig) -> FaultKnobs {
    FaultKnobs {
        latency_ms: faults.latency_ms,
        latency_jitter_ms: faults.latency_jitter_ms,
        slow_rate: faults.slow_rate,
        slow_ms: faults.slow_ms,
        hang_rate: faults.hang_rate,
        drop_rate: faults.drop_rate,
        error_rate: faults.error_rate,
        rate_limit_rate: faults.rate_limit_rate,
        retry_after_ms: faults.retry_after_ms,
        malformed_rate: faults.malformed_rate,
    }
}
